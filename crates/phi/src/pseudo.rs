//! Reversible pseudonymisation for one request: each identifier becomes `[CATEGORY_N]`, the
//! same value always the same token, and the model's answer is mapped back — whole, or chunk
//! by chunk as it streams.
//!
//! The mapping lives only in memory, is keyed by HMAC-SHA256 of the normalised value under a
//! per-instance secret key (so the lookup table holds no plaintext keys), is zeroised on drop,
//! and its `Debug` shows counts only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::{Category, Detector, replace_spans};

type HmacSha256 = Hmac<Sha256>;

/// The longest token this module makes: `[` + the longest category name + `_` + a number +
/// `]`, with room for ten-digit counters.
const MAX_TOKEN_LEN: usize = 1 + 14 + 1 + 10 + 1;

struct Entry {
    token: String,
    value: Zeroizing<String>,
}

/// Replaces identifiers with consistent tokens and restores them. One per request: the
/// mapping must not outlive the conversation it protects.
pub struct Pseudonymizer {
    detector: Detector,
    key: Zeroizing<[u8; 32]>,
    entries: Vec<Entry>,
    by_digest: HashMap<[u8; 32], usize>,
    /// Sorted, so that "could this text still become a token?" is one range lookup.
    by_token: BTreeMap<String, usize>,
    counters: [u32; Category::ALL.len()],
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for Pseudonymizer {
    fn default() -> Self {
        Pseudonymizer::new(Detector::shared())
    }
}

impl Drop for Pseudonymizer {
    fn drop(&mut self) {
        for (mut digest, _) in self.by_digest.drain() {
            digest.zeroize();
        }
        // Entry values are `Zeroizing` and the key too; they clear themselves.
    }
}

/// How values are compared for "the same value": names and places ignore case and spacing;
/// numbers and codes ignore punctuation and spacing (`(617) 555-0143` = `617.555.0143`).
fn normalise(category: Category, value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(value.len()));
    match category {
        Category::Person
        | Category::StreetAddress
        | Category::City
        | Category::Email
        | Category::Url
        | Category::Date => {
            for w in value.split_whitespace() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.extend(w.chars().flat_map(char::to_lowercase));
            }
        }
        _ => out.extend(
            value
                .chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_uppercase),
        ),
    }
    out
}

impl Pseudonymizer {
    /// A pseudonymiser using `detector`, with a fresh random key.
    pub fn new(detector: &Detector) -> Self {
        Pseudonymizer::with_key(detector, rand::random())
    }

    /// A pseudonymiser with a given key (tests; or to derive the key from a request secret).
    pub fn with_key(detector: &Detector, key: [u8; 32]) -> Self {
        Pseudonymizer {
            detector: detector.clone(),
            key: Zeroizing::new(key),
            entries: Vec::new(),
            by_digest: HashMap::new(),
            by_token: BTreeMap::new(),
            counters: [0; Category::ALL.len()],
        }
    }

    /// How many distinct values are mapped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is mapped yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn digest(&self, category: Category, value: &str) -> [u8; 32] {
        let norm = normalise(category, value);
        // A 32-byte key is always a valid HMAC key; the fallback is unreachable.
        let mut mac = match HmacSha256::new_from_slice(self.key.as_slice()) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(category.name().as_bytes());
        mac.update(&[0]);
        mac.update(norm.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The token for `value` of `category`, minting `[CATEGORY_N]` on first sight.
    pub fn token_for(&mut self, category: Category, value: &str) -> String {
        let d = self.digest(category, value);
        if let Some(&i) = self.by_digest.get(&d) {
            return self.entries[i].token.clone();
        }
        let slot = Category::ALL
            .iter()
            .position(|&c| c == category)
            .unwrap_or(0);
        self.counters[slot] += 1;
        let token = format!("[{}_{}]", category.name(), self.counters[slot]);
        let i = self.entries.len();
        self.entries.push(Entry {
            token: token.clone(),
            value: Zeroizing::new(value.to_owned()),
        });
        self.by_digest.insert(d, i);
        self.by_token.insert(token.clone(), i);
        token
    }

    /// `text` with every identifier the detector finds replaced by its token.
    pub fn pseudonymize(&mut self, text: &str) -> String {
        let spans = self.detector.detect(text);
        replace_spans(text, &spans, |s, covered| {
            self.token_for(s.category, covered)
        })
    }

    /// `text` with every token of this mapping replaced by its original value. Tokens not in
    /// the mapping (a model may invent `[PERSON_9]`) are left as they are.
    pub fn reidentify(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..open]);
            let cand = &rest[open..];
            let close = cand
                .as_bytes()
                .iter()
                .take(MAX_TOKEN_LEN)
                .position(|&c| c == b']');
            match close.and_then(|c| self.by_token.get(&cand[..=c]).map(|&i| (c, i))) {
                Some((c, i)) => {
                    out.push_str(&self.entries[i].value);
                    rest = &cand[c + 1..];
                }
                None => {
                    out.push('[');
                    rest = &cand[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Whether `s` (starting with `[`, no `]`) is the start of some token of this mapping.
    fn is_token_prefix(&self, s: &str) -> bool {
        s.len() < MAX_TOKEN_LEN
            && self
                .by_token
                .range::<str, _>((std::ops::Bound::Included(s), std::ops::Bound::Unbounded))
                .next()
                .is_some_and(|(t, _)| t.starts_with(s) && t.len() > s.len())
    }

    /// A streaming re-identifier over this mapping, for answers that arrive in chunks.
    pub fn reidentifier(&self) -> Reidentifier<'_> {
        Reidentifier {
            map: self,
            pending: String::new(),
        }
    }
}

/// Restores tokens in a stream of chunks, even when a token is split across chunks. It holds
/// back only the shortest tail that could still become a known token (`[PER` when
/// `[PERSON_1]` is known) and releases everything else at once.
pub struct Reidentifier<'a> {
    map: &'a Pseudonymizer,
    pending: String,
}

impl fmt::Debug for Reidentifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reidentifier")
            .field("held_bytes", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Appends `chunk` to `pending`, and returns what can be released: everything except the
/// shortest tail that could still become a token of `map`, with tokens restored.
fn release(map: &Pseudonymizer, pending: &mut String, chunk: &str) -> String {
    pending.push_str(chunk);
    let hold = match pending.rfind('[') {
        Some(p) if !pending[p..].contains(']') && map.is_token_prefix(&pending[p..]) => p,
        _ => pending.len(),
    };
    let out = map.reidentify(&pending[..hold]);
    pending.replace_range(..hold, "");
    out
}

impl Reidentifier<'_> {
    /// Feeds one chunk; returns the text that can be released now, tokens restored.
    pub fn push(&mut self, chunk: &str) -> String {
        release(self.map, &mut self.pending, chunk)
    }

    /// Ends the stream: releases whatever was held (it never became a token).
    pub fn finish(mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.map.reidentify(&rest)
    }
}

/// [`Reidentifier`] that owns a shared handle on the mapping, for streams that must be
/// `'static` (an async response body). The mapping is dropped, and zeroised, with its last
/// handle.
pub struct OwnedReidentifier {
    map: Arc<Pseudonymizer>,
    pending: String,
}

impl fmt::Debug for OwnedReidentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedReidentifier")
            .field("held_bytes", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl OwnedReidentifier {
    pub fn new(map: Arc<Pseudonymizer>) -> Self {
        OwnedReidentifier {
            map,
            pending: String::new(),
        }
    }

    /// Feeds one chunk; returns the text that can be released now, tokens restored.
    pub fn push(&mut self, chunk: &str) -> String {
        release(&self.map, &mut self.pending, chunk)
    }

    /// Ends the stream: releases whatever was held. The re-identifier is empty afterwards
    /// and could start a new stream.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.map.reidentify(&rest)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn p() -> Pseudonymizer {
        Pseudonymizer::with_key(Detector::shared(), [7; 32])
    }

    #[test]
    fn same_value_same_token_different_values_different_numbers() {
        let mut ps = p();
        let a = ps.token_for(Category::Person, "John Smith");
        let b = ps.token_for(Category::Person, "john  SMITH");
        let c = ps.token_for(Category::Person, "Mary Jones");
        let d = ps.token_for(Category::Phone, "(617) 555-0143");
        let e = ps.token_for(Category::Phone, "617.555.0143");
        assert_eq!(a, "[PERSON_1]");
        assert_eq!(a, b);
        assert_eq!(c, "[PERSON_2]");
        assert_eq!(d, "[PHONE_1]");
        assert_eq!(d, e);
        assert_eq!(ps.len(), 3);
    }

    #[test]
    fn round_trip_restores_the_first_spelling() {
        let mut ps = p();
        let text = "Pt John Smith (MRN 00482913) called 617-555-0143; John Smith agreed.";
        let pseudo = ps.pseudonymize(text);
        assert!(
            !pseudo.contains("Smith") && !pseudo.contains("00482913"),
            "{pseudo}"
        );
        assert_eq!(pseudo.matches("[PERSON_1]").count(), 2, "{pseudo}");
        assert_eq!(ps.reidentify(&pseudo), text);
    }

    #[test]
    fn unknown_tokens_and_brackets_are_left_alone() {
        let mut ps = p();
        ps.token_for(Category::Person, "Ann Lee");
        let s = "[PERSON_1] and [PERSON_9] [x] [ [PERSON_1";
        assert_eq!(ps.reidentify(s), "Ann Lee and [PERSON_9] [x] [ [PERSON_1");
    }

    #[test]
    fn streaming_holds_only_a_possible_token_prefix() {
        let mut ps = p();
        ps.token_for(Category::Person, "Ann Lee");
        let mut r = ps.reidentifier();
        assert_eq!(r.push("Hello [PER"), "Hello ");
        assert_eq!(r.push("SON_1], [x"), "Ann Lee, [x");
        assert_eq!(r.push(" ok [PERSON_1"), " ok ");
        assert_eq!(r.push("0]"), "[PERSON_10]");
        assert_eq!(r.push("[PERS"), "");
        assert_eq!(r.finish(), "[PERS");
    }

    #[test]
    fn owned_reidentifier_matches_the_borrowed_one() {
        let mut ps = p();
        ps.token_for(Category::Person, "Ann Lee");
        let shared = Arc::new(ps);
        let mut r = OwnedReidentifier::new(shared.clone());
        assert_eq!(r.push("Hi [PERSON"), "Hi ");
        assert_eq!(r.push("_1]! [PERS"), "Ann Lee! ");
        assert_eq!(r.finish(), "[PERS");
        assert_eq!(r.push("[PERSON_1]"), "Ann Lee");
        fn check<T: Send + Sync + 'static>() {}
        check::<OwnedReidentifier>();
        check::<Pseudonymizer>();
    }

    #[test]
    fn debug_shows_no_values() {
        let mut ps = p();
        ps.token_for(Category::Ssn, "123-45-6789");
        let d = format!("{ps:?} {:?}", ps.reidentifier());
        assert!(!d.contains("123") && d.contains("entries: 1"), "{d}");
    }

    #[test]
    fn keys_change_nothing_visible_but_differ_inside() {
        let a = Pseudonymizer::with_key(Detector::shared(), [1; 32]);
        let b = Pseudonymizer::with_key(Detector::shared(), [2; 32]);
        assert_ne!(
            a.digest(Category::Person, "x"),
            b.digest(Category::Person, "x")
        );
        let _ = serde_json::to_string(&Category::Person).unwrap();
    }
}
