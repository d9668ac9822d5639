//! The tag on each row of a shared log's queue ([`crate::shared`]): who may put an event into
//! the log.
//!
//! Queued events are not covered by any signature until a checkpoint is signed over them, so
//! whoever can write the database could add events to the queue, or rewrite queued ones and
//! the entries sequenced since the last checkpoint. Every instance holds the log's signing key,
//! so each tags what it queues with an HMAC-SHA256 under a key derived from it
//! ([`crate::note::SignerKey::queue_key`]): over the row's bytes exactly as queued (the
//! event's leaf at position 0). The sequencer sequences only rows whose tag verifies (any
//! other is set aside as unauthenticated, [`crate::quarantine`]), keeps each tag beside its
//! entry, and checks the tags of the entries after the last checkpoint before it signs over
//! them. Tags are checked in constant time.
//!
//! What a tag cannot do: tell a row that was removed, or one queued twice (a copy of a tagged
//! row). Removal of what a checkpoint covers is caught by [`crate::writer`]'s record of what
//! each instance saw, and by the witness.

use hmac::Mac as _;
use zeroize::Zeroizing;

use crate::merkle::Hash;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key that tags queued rows. Never printed.
pub struct QueueKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueKey([redacted])")
    }
}

impl QueueKey {
    /// A key from its 32 bytes (derived by [`crate::note::SignerKey::queue_key`]).
    pub(crate) fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        match HmacSha256::new_from_slice(self.0.as_ref()) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this arm cannot be reached.
            Err(_) => unreachable!("HMAC-SHA256 takes a 32-byte key"),
        }
    }

    /// The tag of a queued row's `bytes`.
    pub fn tag(&self, bytes: &[u8]) -> Hash {
        let mut mac = self.mac();
        mac.update(bytes);
        Hash(mac.finalize().into_bytes().into())
    }

    /// Whether `tag` is the tag of `bytes` (in constant time). A missing tag never is.
    pub fn verify(&self, bytes: &[u8], tag: Option<&[u8]>) -> bool {
        let Some(tag) = tag else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(bytes);
        mac.verify_slice(tag).is_ok()
    }
}

/// The bytes a leaf had in the queue: the same leaf at position 0. Every leaf version opens
/// with `{"v":N,"seq":S,` (the frame [`crate::quarantine`] relies on too), so this needs no
/// decoding and works for a newer release's entries as well. `None` when `leaf` does not open
/// that way.
pub fn queued_form(leaf: &[u8]) -> Option<Vec<u8>> {
    let rest = leaf.strip_prefix(b"{\"v\":")?;
    let version = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if version == 0 {
        return None;
    }
    let rest = rest[version..].strip_prefix(b",\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !matches!(rest.get(digits), Some(b',' | b'}')) {
        return None;
    }
    let head = leaf.len() - rest.len();
    let mut out = Vec::with_capacity(leaf.len());
    out.extend_from_slice(&leaf[..head]);
    out.push(b'0');
    out.extend_from_slice(&rest[digits..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::queued_form;
    use crate::conformance::sample_event;
    use crate::event::encode_leaf;
    use crate::note::SignerKey;

    #[test]
    fn the_queued_form_of_a_leaf_is_the_leaf_at_position_zero() {
        for seq in [0, 7, 1234567890123] {
            let event = sample_event(seq);
            assert_eq!(
                queued_form(&encode_leaf(seq, &event)).unwrap(),
                encode_leaf(0, &event)
            );
        }
        assert_eq!(
            queued_form(br#"{"v":2,"seq":41,"other":1}"#).unwrap(),
            br#"{"v":2,"seq":0,"other":1}"#
        );
        for bad in [
            &b""[..],
            br#"{"v":,"seq":1,"#,
            br#"{"v":1,"seq":,"#,
            br#"{"v":1,"seq":1x"#,
            br#"{"seq":1,"v":1,"#,
            br#" {"v":1,"seq":1,"#,
        ] {
            assert_eq!(queued_form(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tag_verifies_only_for_its_bytes_and_its_key() {
        let key = SignerKey::generate("example.com/audit")
            .unwrap()
            .queue_key();
        let other = SignerKey::generate("example.com/audit")
            .unwrap()
            .queue_key();
        let tag = key.tag(b"row");
        assert!(key.verify(b"row", Some(tag.as_bytes())));
        assert!(!key.verify(b"rox", Some(tag.as_bytes())));
        assert!(!other.verify(b"row", Some(tag.as_bytes())));
        assert!(!key.verify(b"row", None));
        assert!(!key.verify(b"row", Some(&tag.as_bytes()[..31])));
        // Derived from the signing key: the same key in every instance tags alike, and the
        // tag key is not the prompt digest's salt.
        let a = SignerKey::generate("example.com/audit").unwrap();
        let b = SignerKey::parse(&a.to_private_string()).unwrap();
        assert_eq!(a.queue_key().tag(b"x"), b.queue_key().tag(b"x"));
        assert_ne!(*a.queue_key().0, *a.prompt_salt());
        assert_eq!(format!("{:?}", a.queue_key()), "QueueKey([redacted])");
    }
}
