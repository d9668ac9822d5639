//! Witness cosignatures in the C2SP `tlog-cosignature` form (<https://c2sp.org/tlog-cosignature>),
//! Ed25519 `cosignature/v1`: a witness's statement that, at a time it names, the checkpoint is
//! the largest consistent tree head it has seen of the log.
//!
//! A cosignature is a signed-note signature line, `— <witness name> base64(key id || timestamp
//! || signature)`, where the key id is computed as for a note key but with the signature type
//! 0x04, the timestamp is eight bytes big-endian (POSIX seconds), and the Ed25519 signature is
//! over `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's note text (without its
//! signatures). The witness's verifier key is written `<name>+<hex key id>+<base64(0x04 ||
//! public key)>`, as litewitness and the Go `sumdb/note` tools print it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::note::{self, MAX_SIGNATURES, NoteError, PrivateKey, PublicKey};

/// The signature type of Ed25519 `cosignature/v1`.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Key id, timestamp, Ed25519 signature.
const BLOB_LEN: usize = 4 + 8 + 64;

/// Why a witness's answer did not carry a good cosignature. Messages never quote key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The answer is not a list of signature lines.
    #[error("malformed cosignatures: {0}")]
    Malformed(&'static str),
    /// No line is by the expected witness key (same name and key id).
    #[error("no cosignature by the witness key {0}")]
    Missing(String),
    /// A line by the expected key does not verify for this checkpoint.
    #[error("the cosignature by {0} does not verify for this checkpoint")]
    Bad(String),
}

/// The message a `cosignature/v1` signs: the header, the time line, then the checkpoint's note
/// text.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}")
}

/// A witness's public key: the vkey form with the type byte 0x04, as litewitness prints it.
/// A note key (type 0x01) of the same Ed25519 key does not parse as one.
pub type CosignerKey = PublicKey<ALG_COSIGNATURE_V1>;

impl CosignerKey {
    /// Checks a witness's answer, one or more signature lines each ending in a newline, for a
    /// cosignature by this key on the checkpoint whose note text is `checkpoint_text`; returns
    /// its timestamp. Lines by other keys are ignored (a witness may sign with several); a line
    /// by this key that does not verify fails the answer.
    pub fn verify(&self, checkpoint_text: &str, answer: &str) -> Result<u64, CosignatureError> {
        let lines = answer
            .strip_suffix('\n')
            .ok_or(CosignatureError::Malformed("must end with a newline"))?;
        let mut found = None;
        for (i, line) in lines.split('\n').enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(CosignatureError::Malformed("too many signature lines"));
            }
            let (name, blob) = note::parse_signature_line(line).map_err(|e| match e {
                NoteError::MalformedNote(why) => CosignatureError::Malformed(why),
                _ => CosignatureError::Malformed("not a signature line"),
            })?;
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name != self.name || id != self.key_id {
                continue;
            }
            let bad = || CosignatureError::Bad(self.name.clone());
            if blob.len() != BLOB_LEN {
                return Err(bad());
            }
            let mut time = [0u8; 8];
            time.copy_from_slice(&blob[4..12]);
            let timestamp = u64::from_be_bytes(time);
            if timestamp > i64::MAX as u64 {
                return Err(bad());
            }
            let signature = ed25519_dalek::Signature::from_slice(&blob[12..]).map_err(|_| bad())?;
            self.key
                .verify_strict(
                    signed_message(checkpoint_text, timestamp).as_bytes(),
                    &signature,
                )
                .map_err(|_| bad())?;
            found = Some(timestamp);
        }
        found.ok_or_else(|| CosignatureError::Missing(self.name.clone()))
    }
}

/// A witness's signing key: what a witness (or a test standing in for one) cosigns with.
pub type CosigningKey = PrivateKey<ALG_COSIGNATURE_V1>;

impl CosigningKey {
    /// The cosignature line (ending in a newline) on the checkpoint whose note text is
    /// `checkpoint_text`, made at `timestamp`.
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> String {
        let signature = self.sign_raw(signed_message(checkpoint_text, timestamp).as_bytes());
        let mut blob = Vec::with_capacity(BLOB_LEN);
        blob.extend_from_slice(&self.verifier().key_id().to_be_bytes());
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", self.name(), B64.encode(blob))
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    const BODY: &str = "example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    #[test]
    fn keys_round_trip_and_note_keys_are_refused() {
        let key = CosigningKey::generate("witness.example/w1").unwrap();
        let vkey = key.verifier();
        let parsed = CosignerKey::parse(&vkey.to_string()).unwrap();
        assert_eq!(parsed, vkey);
        assert_eq!(parsed.name(), "witness.example/w1");
        // The same Ed25519 key as a note key (type 0x01) is not a cosigner key.
        let note_key = note::SignerKey::generate("witness.example/w1")
            .unwrap()
            .verifier()
            .to_string();
        assert_eq!(
            CosignerKey::parse(&note_key),
            Err(NoteError::MalformedKey(
                "not an Ed25519 cosignature key (type 0x04)"
            ))
        );
        let wrong_id = vkey
            .to_string()
            .replace(&format!("+{:08x}+", vkey.key_id()), "+00000000+");
        assert_eq!(
            CosignerKey::parse(&wrong_id),
            Err(NoteError::MalformedKey("key id does not match the key"))
        );
        assert!(format!("{key:?}").contains("[redacted]"));
    }

    #[test]
    fn a_cosignature_verifies_only_for_its_checkpoint_and_key() {
        let witness = CosigningKey::generate("witness.example/w1").unwrap();
        let line = witness.cosign(BODY, 1_679_315_147);
        let vkey = witness.verifier();
        assert_eq!(vkey.verify(BODY, &line), Ok(1_679_315_147));
        // Other witnesses' lines are ignored, in any order.
        let other = CosigningKey::generate("witness.example/w2").unwrap();
        let both = format!("{}{line}", other.cosign(BODY, 7));
        assert_eq!(vkey.verify(BODY, &both), Ok(1_679_315_147));
        // Another checkpoint, another key of the same name, a changed time: refused.
        let other_body = BODY.replacen("\n5\n", "\n6\n", 1);
        assert_eq!(
            vkey.verify(&other_body, &line),
            Err(CosignatureError::Bad("witness.example/w1".into()))
        );
        let impostor = CosigningKey::generate("witness.example/w1").unwrap();
        assert_eq!(
            vkey.verify(BODY, &impostor.cosign(BODY, 1)),
            Err(CosignatureError::Missing("witness.example/w1".into()))
        );
        let mut blob = B64
            .decode(line.trim_end().rsplit_once(' ').unwrap().1)
            .unwrap();
        blob[11] ^= 1;
        let retimed = format!("\u{2014} witness.example/w1 {}\n", B64.encode(&blob));
        assert_eq!(
            vkey.verify(BODY, &retimed),
            Err(CosignatureError::Bad("witness.example/w1".into()))
        );
        // Not signature lines at all.
        for answer in ["", "\n", "ok\n", line.trim_end()] {
            assert!(
                matches!(
                    vkey.verify(BODY, answer),
                    Err(CosignatureError::Malformed(_))
                ),
                "{answer:?}"
            );
        }
    }
}
