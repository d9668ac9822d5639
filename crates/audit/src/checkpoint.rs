//! Checkpoints in the C2SP `tlog-checkpoint` form (<https://c2sp.org/tlog-checkpoint>): a
//! signed note whose text is `<origin>\n<tree size>\n<base64 root hash>\n`.
//!
//! The origin names the log (so a checkpoint of one log cannot be passed off as another's);
//! wardgate writes no extension lines and refuses checkpoints that have them, so a checkpoint's
//! meaning is exactly (origin, size, root).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::merkle::Hash;
use crate::note::{self, NoteError, SignerKey, VerifierKey};

/// The longest origin accepted.
pub const MAX_ORIGIN_LEN: usize = 256;

/// Why a checkpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note itself failed (malformed, bad or unknown signature).
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The signed text is not a checkpoint body of the form wardgate writes.
    #[error("malformed checkpoint body: {0}")]
    Body(&'static str),
    /// The origin is not the expected one.
    #[error("checkpoint is for another log (origin mismatch)")]
    WrongOrigin,
}

/// What a checkpoint commits to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Entries in the tree.
    pub size: u64,
    /// The tree head.
    pub root: Hash,
}

/// Checks an origin: non-empty, bounded, no whitespace at the ends, no control characters.
pub fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty()
        || origin.len() > MAX_ORIGIN_LEN
        || origin.trim() != origin
        || origin.chars().any(char::is_control)
    {
        return Err(CheckpointError::Body("invalid origin"));
    }
    Ok(())
}

impl Checkpoint {
    /// The note text: three lines, each ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0)
        )
    }

    /// Parses a body strictly: exactly three lines, a decimal size without leading zeros, and
    /// the canonical (padded, standard alphabet) base64 of 32 bytes.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Body("must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Body(
                "expected exactly three lines (origin, size, root)",
            ));
        };
        check_origin(origin)?;
        let size_ok = !size.is_empty()
            && size.len() <= 20
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !size_ok {
            return Err(CheckpointError::Body("tree size is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Body("tree size out of range"))?;
        let raw = B64
            .decode(root)
            .map_err(|_| CheckpointError::Body("root hash is not base64"))?;
        let root_hash =
            Hash::from_slice(&raw).ok_or(CheckpointError::Body("root hash must be 32 bytes"))?;
        if B64.encode(root_hash.0) != root {
            return Err(CheckpointError::Body("root hash is not canonical base64"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root: root_hash,
        })
    }

    /// Signs the checkpoint.
    pub fn sign(&self, signer: &SignerKey) -> Result<SignedCheckpoint, CheckpointError> {
        check_origin(&self.origin)?;
        let note = signer.sign(&self.body())?;
        Ok(SignedCheckpoint {
            checkpoint: self.clone(),
            note,
        })
    }
}

/// A checkpoint with its signed note, as stored and exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it commits to.
    pub checkpoint: Checkpoint,
    /// The whole signed note.
    pub note: String,
}

impl SignedCheckpoint {
    /// Verifies the note against `keys` and parses its body; if `origin` is given, the
    /// checkpoint must be for that log.
    pub fn open(
        note_text: &str,
        keys: &[VerifierKey],
        origin: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let verified = note::open(note_text, keys)?;
        let checkpoint = Checkpoint::parse_body(&verified.text)?;
        if origin.is_some_and(|o| o != checkpoint.origin) {
            return Err(CheckpointError::WrongOrigin);
        }
        Ok(Self {
            checkpoint,
            note: note_text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::merkle::leaf_hash;

    fn cp(size: u64) -> Checkpoint {
        Checkpoint {
            origin: "example.com/audit".into(),
            size,
            root: leaf_hash(&size.to_be_bytes()),
        }
    }

    #[test]
    fn sign_and_open_round_trip() {
        let key = SignerKey::generate("example.com/audit").unwrap();
        let signed = cp(42).sign(&key).unwrap();
        assert!(signed.note.starts_with("example.com/audit\n42\n"));
        let opened =
            SignedCheckpoint::open(&signed.note, &[key.verifier()], Some("example.com/audit"))
                .unwrap();
        assert_eq!(opened, signed);
    }

    #[test]
    fn wrong_key_altered_body_and_wrong_origin_fail() {
        let key = SignerKey::generate("example.com/audit").unwrap();
        let signed = cp(42).sign(&key).unwrap();
        let other = SignerKey::generate("example.com/audit").unwrap();
        assert!(matches!(
            SignedCheckpoint::open(&signed.note, &[other.verifier()], None),
            Err(CheckpointError::Note(NoteError::NoKnownSignature))
        ));
        let altered = signed.note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            SignedCheckpoint::open(&altered, &[key.verifier()], None),
            Err(CheckpointError::Note(NoteError::BadSignature(_)))
        ));
        assert_eq!(
            SignedCheckpoint::open(&signed.note, &[key.verifier()], Some("other/log")),
            Err(CheckpointError::WrongOrigin)
        );
    }

    #[test]
    fn bodies_parse_strictly() {
        let good = cp(7).body();
        assert_eq!(Checkpoint::parse_body(&good).unwrap(), cp(7));
        let root = B64.encode(cp(7).root.0);
        let cases = [
            String::new(),
            good.trim_end().to_owned(),
            format!("{good}extension\n"),
            format!("example.com/audit\n07\n{root}\n"),
            format!("example.com/audit\n+7\n{root}\n"),
            format!("example.com/audit\n-1\n{root}\n"),
            format!("example.com/audit\n99999999999999999999\n{root}\n"),
            format!("example.com/audit\n7\n{}\n", root.trim_end_matches('=')),
            format!("example.com/audit\n7\n{}\n", B64.encode([0u8; 31])),
            format!("\n7\n{root}\n"),
            format!(" example.com/audit\n7\n{root}\n"),
            format!("example.com/audit\n\n{root}\n"),
        ];
        for body in cases {
            assert!(Checkpoint::parse_body(&body).is_err(), "{body:?}");
        }
    }
}
