//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519: signing, strict bounded
//! parsing and verification, and the signer and verifier key encodings.
//!
//! A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
//! `— <key name> <base64(key id || signature)>`. The key id is the first four bytes of
//! `SHA-256(key name || 0x0A || 0x01 || public key)`, where `0x01` names Ed25519. Keys are
//! written as in Go's `golang.org/x/mod/sumdb/note`, so its tools can read them:
//! verifier `<name>+<hex key id>+<base64(0x01 || public key)>` and signer
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.
//!
//! Parsing never panics on input and is bounded: a note is at most [`MAX_NOTE_LEN`] bytes with
//! at most [`MAX_SIGNATURES`] signatures.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

/// The signature type byte for Ed25519.
pub const ALG_ED25519: u8 = 0x01;
/// The largest note accepted, in bytes. A checkpoint note is a few hundred bytes.
pub const MAX_NOTE_LEN: usize = 16 * 1024;
/// The most signature lines accepted (the Go implementation's limit).
pub const MAX_SIGNATURES: usize = 100;
/// The longest key name accepted.
pub const MAX_NAME_LEN: usize = 256;
/// The first characters of every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key or a note was refused. Messages never quote key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A key string is not in the expected form.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// A key name is empty, too long, or has whitespace, `+` or control characters.
    #[error("invalid key name")]
    InvalidName,
    /// The note is not in the signed-note form, or breaks a bound.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// Text to sign is not valid note text (must end in a newline, no control characters but
    /// newlines).
    #[error("invalid note text: {0}")]
    InvalidText(&'static str),
    /// A signature by a known key does not verify.
    #[error("invalid signature by {0}")]
    BadSignature(String),
    /// No signature is by a known key.
    #[error("no signature by a known key")]
    NoKnownSignature,
    /// The operating system's random source failed.
    #[error("random source failed")]
    Random,
}

/// Checks a key name: 1 to [`MAX_NAME_LEN`] bytes, no whitespace, `+` or control characters.
pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(NoteError::InvalidName);
    }
    Ok(())
}

/// The key id: the first four bytes of `SHA-256(name || "\n" || alg || public key)`, where
/// `alg` is the signature type (0x01 for notes, 0x04 for witness cosignatures).
fn key_id(alg: u8, name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// An Ed25519 private key of signature type `TYPE`: a checkpoint signing key ([`SignerKey`],
/// type 0x01) or a witness's cosigning key ([`crate::cosignature::CosigningKey`], type 0x04).
/// Never printed (`Debug` is redacted) and wiped on drop (`ed25519-dalek` zeroizes its secret;
/// the encodings made here are wiped too).
pub struct PrivateKey<const TYPE: u8> {
    name: String,
    key: ed25519_dalek::SigningKey,
}

/// A checkpoint signing key.
pub type SignerKey = PrivateKey<ALG_ED25519>;

impl<const TYPE: u8> fmt::Debug for PrivateKey<TYPE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl<const TYPE: u8> PrivateKey<TYPE> {
    /// A key from its 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(seed.as_mut())
            .map_err(|_| NoteError::Random)?;
        Self::from_seed(name, &seed)
    }

    /// The key's name (for a checkpoint signing key, conventionally the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn verifier(&self) -> PublicKey<TYPE> {
        PublicKey::new(&self.name, self.key.verifying_key())
    }

    /// Signs `message` as it is.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.key.sign(message)
    }
}

impl SignerKey {
    /// The deployment's salt for [`crate::event::prompt_digest`], derived from this key's seed
    /// (HMAC-SHA256 with a fixed label), so the salt needs no file of its own and is as secret
    /// as the signing key. Rotating the signing key rotates the salt.
    pub fn prompt_salt(&self) -> Zeroizing<[u8; 32]> {
        self.derive(b"wardgate prompt digest salt v1")
    }

    /// The key that tags a shared log's queued rows ([`crate::queue_tag`]), derived from this
    /// key's seed like [`Self::prompt_salt`] (with another label), so every instance that has
    /// the signing key has it, and nobody else.
    pub fn queue_key(&self) -> crate::queue_tag::QueueKey {
        crate::queue_tag::QueueKey::new(self.derive(b"wardgate audit queue tag v1"))
    }

    /// HMAC-SHA256 of `label` under this key's seed.
    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        use hmac::Mac;
        let seed = Zeroizing::new(self.key.to_bytes());
        match <hmac::Hmac<sha2::Sha256>>::new_from_slice(seed.as_ref()) {
            Ok(mut mac) => {
                mac.update(label);
                Zeroizing::new(mac.finalize().into_bytes().into())
            }
            // HMAC takes keys of any length; this arm cannot be reached.
            Err(_) => Zeroizing::new([0u8; 32]),
        }
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>` (surrounding whitespace,
    /// such as a file's final newline, is ignored). The key id must match.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let text = text.trim();
        if text.len() > 1024 {
            return Err(NoteError::MalformedKey("too long"));
        }
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey(
                "expected PRIVATE+KEY+<name>+<id>+<key>",
            ))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::MalformedKey(
                "expected PRIVATE+KEY+<name>+<id>+<key>",
            ));
        };
        check_name(name)?;
        let id = parse_key_id(id_hex)?;
        let decoded = Zeroizing::new(
            B64.decode(key_b64)
                .map_err(|_| NoteError::MalformedKey("key is not base64"))?,
        );
        let (&alg, seed) = decoded
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::MalformedKey("not an Ed25519 key"));
        }
        let mut seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.try_into()
                .map_err(|_| NoteError::MalformedKey("Ed25519 seed must be 32 bytes"))?,
        );
        let key = Self::from_seed(name, &seed)?;
        seed.zeroize();
        if key.verifier().key_id != id {
            return Err(NoteError::MalformedKey("key id does not match the key"));
        }
        Ok(key)
    }

    /// The `PRIVATE+KEY+...` encoding, for writing a key file. Wiped when dropped.
    pub fn to_private_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        let mut out = Zeroizing::new(String::with_capacity(128));
        out.push_str("PRIVATE+KEY+");
        out.push_str(&self.name);
        out.push('+');
        out.push_str(&format!("{:08x}", self.verifier().key_id));
        out.push('+');
        B64.encode_string(raw.as_slice(), &mut out);
        out
    }

    /// Signs `text` and returns the whole note (text, blank line, one signature line).
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.verifier().key_id.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        let mut note = String::with_capacity(text.len() + self.name.len() + 100);
        note.push_str(text);
        note.push('\n');
        note.push_str(SIG_PREFIX);
        note.push_str(&self.name);
        note.push(' ');
        B64.encode_string(&blob, &mut note);
        note.push('\n');
        Ok(note)
    }
}

fn parse_key_id(hex_id: &str) -> Result<u32, NoteError> {
    if hex_id.len() != 8 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("key id must be 8 hex digits"));
    }
    u32::from_str_radix(hex_id, 16)
        .map_err(|_| NoteError::MalformedKey("key id must be 8 hex digits"))
}

/// Parses a verifier key `<name>+<hex key id>+<base64(alg || Ed25519 public key)>` of signature
/// type `alg`: the name, the key id (which must match) and the key (a valid point).
fn parse_vkey(
    text: &str,
    alg: u8,
) -> Result<(String, u32, ed25519_dalek::VerifyingKey), NoteError> {
    let text = text.trim();
    if text.len() > 1024 {
        return Err(NoteError::MalformedKey("too long"));
    }
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(NoteError::MalformedKey("expected <name>+<id>+<key>"));
    };
    check_name(name)?;
    let id = parse_key_id(id_hex)?;
    let decoded = B64
        .decode(key_b64)
        .map_err(|_| NoteError::MalformedKey("key is not base64"))?;
    let (&found, public) = decoded
        .split_first()
        .ok_or(NoteError::MalformedKey("empty key"))?;
    if found != alg {
        return Err(NoteError::MalformedKey(if alg == ALG_ED25519 {
            "not an Ed25519 key"
        } else {
            "not an Ed25519 cosignature key (type 0x04)"
        }));
    }
    let public: [u8; 32] = public
        .try_into()
        .map_err(|_| NoteError::MalformedKey("Ed25519 key must be 32 bytes"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
        .map_err(|_| NoteError::MalformedKey("not a valid Ed25519 public key"))?;
    if key_id(alg, name, &public) != id {
        return Err(NoteError::MalformedKey("key id does not match the key"));
    }
    Ok((name.to_owned(), id, key))
}

/// Splits one signature line, `— <key name> <base64 blob>` (without its newline), into the
/// name and the decoded blob, which holds at least the four-byte key id and one more byte.
pub(crate) fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), NoteError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(NoteError::MalformedNote(
            "signature line must start with an em dash",
        ))?;
    let (name, b64) = rest.split_once(' ').ok_or(NoteError::MalformedNote(
        "signature line must be `— name signature`",
    ))?;
    check_name(name).map_err(|_| NoteError::MalformedNote("invalid key name"))?;
    let blob = B64
        .decode(b64)
        .map_err(|_| NoteError::MalformedNote("signature is not base64"))?;
    if blob.len() < 5 {
        return Err(NoteError::MalformedNote("signature too short"));
    }
    Ok((name, blob))
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_LEN {
        return Err(NoteError::InvalidText("too long"));
    }
    if !text.ends_with('\n') {
        return Err(NoteError::InvalidText("must end with a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::InvalidText(
            "control characters other than newline",
        ));
    }
    Ok(())
}

/// An Ed25519 public key of signature type `TYPE`, in the vkey form
/// `<name>+<hex key id>+<base64(TYPE || key)>`: a note verifier key ([`VerifierKey`], type 0x01)
/// or a witness's cosignature key ([`crate::CosignerKey`], type 0x04). Printable: `Display`
/// gives the vkey form.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey<const TYPE: u8> {
    pub(crate) name: String,
    pub(crate) key_id: u32,
    pub(crate) key: ed25519_dalek::VerifyingKey,
}

/// A public key that checks notes.
pub type VerifierKey = PublicKey<ALG_ED25519>;

impl<const TYPE: u8> fmt::Debug for PublicKey<TYPE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl<const TYPE: u8> fmt::Display for PublicKey<TYPE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(TYPE);
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, B64.encode(raw))
    }
}

impl<const TYPE: u8> PublicKey<TYPE> {
    /// Parses the vkey form; the type byte must be `TYPE`, the key id must match, and the key
    /// must be a valid Ed25519 point.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, key_id, key) = parse_vkey(text, TYPE)?;
        Ok(Self { name, key_id, key })
    }

    /// The key made of `name` and an Ed25519 public key, with its key id.
    pub(crate) fn new(name: &str, key: ed25519_dalek::VerifyingKey) -> Self {
        Self {
            key_id: key_id(TYPE, name, key.as_bytes()),
            name: name.to_owned(),
            key,
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The four-byte key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

/// A note whose signature by at least one known key verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Names of the known keys whose signatures verified.
    pub verified_by: Vec<String>,
}

/// Parses `note` and checks its signatures against `known`.
///
/// As in the reference implementation: signatures by unknown keys are ignored, a signature by a
/// known key (same name and key id) that does not verify fails the whole note, and at least one
/// known signature must verify.
pub fn open(note: &str, known: &[VerifierKey]) -> Result<VerifiedNote, NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::MalformedNote("too long"));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::MalformedNote(
            "control characters other than newline",
        ));
    }
    // The signature block follows the last blank line; signature lines are never empty.
    let split = note.rfind("\n\n").ok_or(NoteError::MalformedNote(
        "no blank line before the signatures",
    ))?;
    let text = &note[..=split];
    let sigs = &note[split + 2..];
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote(
            "signatures must end with a newline",
        ));
    }
    let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::MalformedNote("too many signatures"));
    }
    let mut verified_by: Vec<String> = Vec::new();
    for line in lines {
        let (name, blob) = parse_signature_line(line)?;
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let Some(key) = known.iter().find(|k| k.name == name && k.key_id == id) else {
            continue;
        };
        let sig = ed25519_dalek::Signature::from_slice(&blob[4..])
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        // Strict verification refuses the malleable and small-order edge cases that plain
        // Ed25519 verification lets through.
        key.key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        if !verified_by.iter().any(|n| n == name) {
            verified_by.push(name.to_owned());
        }
    }
    if verified_by.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(VerifiedNote {
        text: text.to_owned(),
        verified_by,
    })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    // The example key and note from golang.org/x/mod/sumdb/note (data only): Ed25519 is
    // deterministic, so the same key and text must give exactly this note.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    // The example in the C2SP signed-note specification.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo \
        Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn matches_the_go_reference_vector() {
        let signer = SignerKey::parse(GO_SKEY).unwrap();
        assert_eq!(signer.verifier().to_string(), GO_VKEY);
        assert_eq!(signer.to_private_string().as_str(), GO_SKEY);
        assert_eq!(signer.sign(GO_TEXT).unwrap(), GO_NOTE);
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(vkey.key_id(), 0xc74f20a3);
        let opened = open(GO_NOTE, &[vkey]).unwrap();
        assert_eq!(opened.text, GO_TEXT);
        assert_eq!(opened.verified_by, ["PeterNeumann"]);
    }

    #[test]
    fn opens_the_spec_example() {
        let vkey = VerifierKey::parse(SPEC_VKEY).unwrap();
        let opened = open(SPEC_NOTE, &[vkey]).unwrap();
        assert_eq!(opened.text, "This is an example message.\n");
    }

    #[test]
    fn wrong_key_and_altered_text_fail() {
        let other = SignerKey::generate("PeterNeumann").unwrap().verifier();
        // Same name, different key: a different key id, so the signature is not by a known key.
        assert_eq!(open(GO_NOTE, &[other]), Err(NoteError::NoKnownSignature));
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        let altered = GO_NOTE.replacen("cryptography", "cryptographY", 1);
        assert_eq!(
            open(&altered, std::slice::from_ref(&vkey)),
            Err(NoteError::BadSignature("PeterNeumann".into()))
        );
        // An extra signature by an unknown key is ignored.
        let stranger = SignerKey::generate("stranger").unwrap();
        let cosigned = stranger.sign(GO_TEXT).unwrap();
        let extra_line = cosigned.rsplit_once("\n\n").unwrap().1;
        let both = format!("{GO_NOTE}{extra_line}");
        assert!(open(&both, std::slice::from_ref(&vkey)).is_ok());
        // ... and verifies when known.
        let both_keys = [vkey, stranger.verifier()];
        assert_eq!(open(&both, &both_keys).unwrap().verified_by.len(), 2);
    }

    #[test]
    fn malformed_notes_are_rejected_without_panicking() {
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        let sig_line = GO_NOTE.rsplit_once("\n\n").unwrap().1;
        let long_sigs = sig_line.repeat(MAX_SIGNATURES + 1);
        let cases: Vec<String> = vec![
            String::new(),
            "\n".into(),
            "\n\n".into(),
            GO_TEXT.into(),
            format!("{GO_TEXT}\n"),
            GO_NOTE.trim_end().into(),
            GO_NOTE.replacen('\u{2014}', "-", 1),
            GO_NOTE.replacen("\u{2014} ", "\u{2014}", 1),
            GO_NOTE.replacen(" x08go", "x08go", 1),
            GO_NOTE.replacen("x08go", "!!!!!", 1),
            format!("{GO_TEXT}\n\u{2014} PeterNeumann AAAA\n"),
            format!("{GO_TEXT}\n\u{2014} PeterNeumann \n"),
            format!("{GO_TEXT}\n\u{2014}  x08go\n"),
            format!("{GO_TEXT}\n{long_sigs}"),
            GO_NOTE.replacen("problem,", "problem,\u{7}", 1),
            "x".repeat(MAX_NOTE_LEN + 1),
            format!("{GO_TEXT}\n\u{2014} PeterNeumann {}\n", "A".repeat(10_000)),
            "\u{2014}\n\n\u{2014} \u{2014} \u{2014}\n".into(),
        ];
        for note in &cases {
            assert!(open(note, std::slice::from_ref(&vkey)).is_err(), "{note:?}");
        }
    }

    #[test]
    fn keys_parse_strictly() {
        let bad_vkeys = [
            "",
            "PeterNeumann",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ApFc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ];
        for k in bad_vkeys {
            assert!(VerifierKey::parse(k).is_err(), "{k}");
        }
        let bad_skeys = [
            "",
            "PRIVATE+KEY+",
            "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKD",
            GO_VKEY,
        ];
        for k in bad_skeys {
            assert!(SignerKey::parse(k).is_err(), "{k}");
        }
        assert!(SignerKey::generate("has space").is_err());
        assert!(SignerKey::generate("has+plus").is_err());
    }

    #[test]
    fn signer_never_prints_its_secret() {
        let signer = SignerKey::parse(GO_SKEY).unwrap();
        let printed = format!("{signer:?}");
        assert!(printed.contains("[redacted]"));
        assert!(!printed.contains("AYEKFALV"));
        let generated = SignerKey::generate("log").unwrap();
        let round = SignerKey::parse(&generated.to_private_string()).unwrap();
        assert_eq!(round.verifier(), generated.verifier());
    }

    #[test]
    fn sign_refuses_bad_text() {
        let signer = SignerKey::generate("log").unwrap();
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("tab\there\n").is_err());
    }
}
