//! Reversible pseudonymisation for one request: each identifier becomes `[CATEGORY_N]`, the
//! same value always the same token, and the model's answer is mapped back — whole, or chunk
//! by chunk as it streams.
//!
//! The mapping lives only in memory, is keyed by HMAC-SHA256 of the normalised value under a
//! per-instance secret key (so the lookup table holds no plaintext keys), is zeroised on drop,
//! and its `Debug` shows counts only.
//!
//! Tokens cannot be forged: text in the input that is shaped like a token (`[SSN_1]`, typed
//! by the client or pasted from elsewhere) is itself replaced by a token of its own, like an
//! identifier, so the model never sees one string standing for two things, and the answer
//! gets the literal text back where the model echoes it — never a real value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::{Category, Detector, Span, replace_spans};

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

    /// How many tokens were minted in each category (each a distinct value replaced), the
    /// categories with none left out: counts only, for metrics.
    pub fn minted(&self) -> impl Iterator<Item = (Category, u32)> + '_ {
        Category::ALL
            .into_iter()
            .zip(self.counters)
            .filter(|(_, n)| *n > 0)
    }

    /// The lookup key of a value: an identifier (`literal` false, normalised), or text of the
    /// input shaped like a token (`literal` true, exact), in separate domains.
    fn digest(&self, category: Category, value: &str, literal: bool) -> [u8; 32] {
        let norm = if literal {
            Zeroizing::new(value.to_owned())
        } else {
            normalise(category, value)
        };
        // A 32-byte key is always a valid HMAC key; the fallback is unreachable.
        let mut mac = match HmacSha256::new_from_slice(self.key.as_slice()) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(category.name().as_bytes());
        mac.update(&[u8::from(literal)]);
        mac.update(norm.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The token for `value` of `category`, minting `[CATEGORY_N]` on first sight.
    pub fn token_for(&mut self, category: Category, value: &str) -> String {
        self.token(category, value, false)
    }

    fn token(&mut self, category: Category, value: &str, literal: bool) -> String {
        let d = self.digest(category, value, literal);
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

    /// `text` with every identifier the detector finds replaced by its token, and every piece
    /// of text shaped like a token (`[SSN_1]`) replaced by a token of its own, which the
    /// answer turns back into that text as written.
    pub fn pseudonymize(&mut self, text: &str) -> String {
        let mut spans = self.detector.detect(text);
        let literals = literal_tokens(text);
        if !literals.is_empty() {
            // An identifier overlapping a literal wins: replacing it breaks the literal's shape.
            let free: Vec<Span> = literals
                .into_iter()
                .filter(|l| !spans.iter().any(|s| s.start < l.end && l.start < s.end))
                .collect();
            spans.extend(free);
            spans.sort_by_key(|s| s.start);
        }
        replace_spans(text, &spans, |s, covered| {
            let literal = token_shape(covered) == Some(s.category);
            self.token(s.category, covered, literal)
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

/// The category of `s` when it has the shape of a token this module makes: `[`, the exact
/// name of a category, `_`, digits, `]`.
fn token_shape(s: &str) -> Option<Category> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (name, digits) = inner.rsplit_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Category::ALL.into_iter().find(|c| c.name() == name)
}

/// The pieces of `text` shaped like a token (at most [`MAX_TOKEN_LEN`] bytes: a longer one
/// cannot be a token this module makes), as spans of their category.
fn literal_tokens(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = text.get(at..).and_then(|rest| rest.find('[')) {
        let start = at + open;
        let window = &text.as_bytes()[start..text.len().min(start + MAX_TOKEN_LEN)];
        // `]` is ASCII, so the cut is on a character boundary.
        let found = window
            .iter()
            .position(|&b| b == b']')
            .and_then(|close| text.get(start..=start + close))
            .and_then(|t| token_shape(t).map(|category| (t.len(), category)));
        match found {
            Some((len, category)) => {
                out.push(Span {
                    category,
                    start,
                    end: start + len,
                    score: 1.0,
                });
                at = start + len;
            }
            None => at = start + 1,
        }
    }
    out
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
    fn token_shaped_input_cannot_stand_for_a_real_value() {
        // The client writes the literal `[SSN_1]` next to a real SSN, in either order and in
        // separate texts of one request: the model sees two different strings, and an answer
        // echoing both gets the literal back as written and the SSN only for its own token.
        for texts in [
            ["ref [SSN_1] then SSN 123-45-6789", ""],
            ["SSN 123-45-6789", "ref [SSN_1]"],
        ] {
            let mut ps = p();
            let out: Vec<String> = texts.iter().map(|t| ps.pseudonymize(t)).collect();
            let joined = out.join(" | ");
            assert!(!joined.contains("123-45-6789"), "{joined}");
            let tokens: Vec<&str> = joined
                .split(|c: char| c.is_whitespace())
                .filter(|w| w.starts_with("[SSN_"))
                .collect();
            assert_eq!(tokens.len(), 2, "{joined}");
            assert_ne!(tokens[0], tokens[1], "{joined}");
            // Each text comes back as it was written.
            for (t, o) in texts.iter().zip(&out) {
                assert_eq!(&ps.reidentify(o), t);
            }
        }
        // Bracketed text of other shapes is left alone, and a literal is mapped exactly.
        let mut ps = p();
        let t = "[ssn_1] [SSN_] [NAME_1] [SSN_1x] [STREET_ADDRESS_12] [SSN_1]";
        let o = ps.pseudonymize(t);
        assert!(o.starts_with("[ssn_1] [SSN_] [NAME_1] [SSN_1x] "), "{o}");
        assert_eq!(ps.reidentify(&o), t);
        let mut r = ps.reidentifier();
        let mut streamed = String::new();
        for ch in o.chars() {
            streamed.push_str(&r.push(&ch.to_string()));
        }
        streamed.push_str(&r.finish());
        assert_eq!(streamed, t);
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
            a.digest(Category::Person, "x", false),
            b.digest(Category::Person, "x", false)
        );
        let _ = serde_json::to_string(&Category::Person).unwrap();
    }
}
