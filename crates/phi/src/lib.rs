//! Finds the 18 HIPAA Safe Harbor identifiers (45 CFR 164.514(b)(2)) in text, redacts them,
//! and replaces them with consistent pseudonyms that can be reversed within one request.
//!
//! Pure Rust, no IO: the dictionaries (US Census names, SCOWL English words, GeoNames places,
//! USPS street suffixes, FDA UNII drug names and a hand-written clinical vocabulary; sources
//! and licences in `data/NOTICE.md`) are compiled in and parsed
//! once on first use. One [`Detector`] is built once and shared (`Send + Sync`, `detect`
//! takes `&self`); [`detect`] and [`redact`] use a process-wide default.
//!
//! ```
//! let text = "Pt John Smith, DOB 03/14/1931, MRN 00482913, called from 617-555-0143.";
//! let redacted = wardgate_phi::redact(text);
//! assert_eq!(redacted, "Pt [PERSON], DOB [DATE], MRN [MRN], called from [PHONE].");
//! ```
//!
//! # Categories and the Safe Harbor list
//!
//! | Safe Harbor item | [`Category`] |
//! |---|---|
//! | (A) names | `PERSON` |
//! | (B) geographic subdivisions smaller than a state | `STREET_ADDRESS`, `CITY`, `ZIP_CODE`, `LOCATION` |
//! | (C) dates (except year) and ages over 89 | `DATE`, `AGE` |
//! | (D) telephone numbers | `PHONE` |
//! | (E) fax numbers | `FAX` |
//! | (F) e-mail addresses | `EMAIL` |
//! | (G) social security numbers | `SSN` |
//! | (H) medical record numbers | `MRN` |
//! | (I) health plan beneficiary numbers | `HEALTH_PLAN` |
//! | (J) account numbers | `ACCOUNT`, `CREDIT_CARD`, `IBAN` |
//! | (K) certificate/licence numbers | `LICENSE` |
//! | (L) vehicle identifiers and serial numbers, licence plates | `VEHICLE` |
//! | (M) device identifiers and serial numbers | `DEVICE` |
//! | (N) web URLs | `URL` |
//! | (O) IP addresses | `IP_ADDRESS` |
//! | (P) biometric identifiers | `BIOMETRIC` |
//! | (Q) full-face photographs | — (text has none) |
//! | (R) any other unique identifying number or code | `ID` |
//!
//! # How it works
//!
//! Text that hides what it shows is first normalised (`norm.rs`: NFKC compatibility forms
//! such as full-width digits, every script's decimal digits, Unicode hyphens and dashes
//! between digits, soft hyphens and zero-width characters removed), and the spans found are
//! mapped back to byte offsets of the input as written.
//! One pass splits the input into tokens; web identifiers get a pass of their own, then one
//! shared pass tries, at each token, addresses, keyword-claimed and shaped numbers, month-name
//! dates and names, in that order; finally a name given in full makes its parts names
//! wherever they recur in the document. Formats with a check are checked (SSN assignment rules, Luhn, NPI, VIN check
//! digit, IBAN mod-97, DEA checksum, MBI shape); context words (`MRN`, `fax`, `DOB`,
//! `member ID`, `Dr.`, `pt`, `policy`, `acct`, `license`, `plate`, `serial`, `device`) claim or
//! score the values near them. Overlapping candidates merge into one span. Words of clinical
//! notes (`Pt`, `NEURO`, `Propofol`, `Foley`, telegraphic openers such as `Will` and `Given`)
//! are no names in any case, unless a title or a relative word says so (`Dr. Will`).
//! Hospitals, clinics and nursing homes (`LOCATION`) are found by their facility word
//! (`Lowell General Hospital`), a religious name (`Sacred Heart`, `St. Luke's`), or, after a
//! place word, an abbreviation or a name alone (`from GH`, `transferred from Hardy`).
//!
//! Known limits: in ordinary text, names written in lower case are found only at a line
//! start, after a title, or after a role word when they are census names (`patient john
//! smith`; text written without capitals is checked word by word against the name lists);
//! a single capitalised word that is in no list (a drug brand, a place) can be
//! taken for a surname unless a verb, a dose or an eponym's noun around it says otherwise; a
//! licence plate or serial number is only found after a keyword that says what it is; a
//! 17-character VIN whose check digit fails (most non-North-American VINs) is only found after
//! `VIN`; NPI, DEA and IMEI values that fail their check are dropped even after their keyword.

mod category;
mod checks;
pub mod cli;
mod detect;
mod dict;
#[cfg(feature = "eval")]
pub mod eval;
mod lex;
mod norm;
mod pseudo;

use std::sync::LazyLock;

pub use category::{Category, CategorySet, UnknownCategory};
pub use pseudo::{OwnedReidentifier, Pseudonymizer, Reidentifier};
use serde::{Deserialize, Serialize};

/// One identifier found in the input: its category, byte offsets into the UTF-8 input
/// (`start..end`, always on character boundaries) and a confidence in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub category: Category,
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

impl Span {
    /// The covered text.
    pub fn text<'a>(&self, input: &'a str) -> &'a str {
        input.get(self.start..self.end).unwrap_or("")
    }
}

/// Finds identifiers. Cheap to share: build once (or use [`Detector::shared`]) and call
/// [`Detector::detect`] from any thread.
#[derive(Clone, Debug, PartialEq)]
pub struct Detector {
    categories: CategorySet,
    min_score: f32,
    /// Check every lower-case word against the name lists (see [`Detector::high_recall`]).
    lower_case_names: bool,
}

/// The score below which a candidate is dropped by default. Chosen on the development sets
/// (see `bench/src/phi_bench.rs`): a single unknown capitalised word mid-sentence scores 0.55,
/// one at a sentence start 0.4.
pub const DEFAULT_MIN_SCORE: f32 = 0.5;

impl Default for Detector {
    fn default() -> Self {
        Detector {
            categories: CategorySet::all(),
            min_score: DEFAULT_MIN_SCORE,
            lower_case_names: false,
        }
    }
}

/// The score from which [`Detector::high_recall`] keeps a candidate: the lowest any family
/// proposes one at (a weak name candidate scores 0.3).
pub const HIGH_RECALL_MIN_SCORE: f32 = 0.3;

static SHARED: LazyLock<Detector> = LazyLock::new(Detector::default);

impl Detector {
    /// Every category, [`DEFAULT_MIN_SCORE`].
    pub fn new() -> Self {
        Detector::default()
    }

    /// The process-wide default detector.
    pub fn shared() -> &'static Detector {
        &SHARED
    }

    /// The most recall-oriented setting, for short text that is kept where nothing can delete
    /// it (a break-glass reason in the audit log): every category, every candidate from
    /// [`HIGH_RECALL_MIN_SCORE`], and lower-case words checked against the name lists wherever
    /// they are (`pt zelda quackenbush`), not only in text written without capitals. It
    /// redacts more that is no PHI; that is the price of keeping the log clean.
    pub fn high_recall() -> Self {
        Detector {
            categories: CategorySet::all(),
            min_score: HIGH_RECALL_MIN_SCORE,
            lower_case_names: true,
        }
    }

    /// Check every lower-case word against the name lists (as in text written without
    /// capitals), or only where the text or a title asks for it (the default).
    #[must_use]
    pub fn with_lower_case_names(mut self, on: bool) -> Self {
        self.lower_case_names = on;
        self
    }

    /// Only report these categories.
    #[must_use]
    pub fn with_categories(mut self, categories: impl IntoIterator<Item = Category>) -> Self {
        self.categories = categories.into_iter().collect();
        self
    }

    /// Drop candidates scoring below `min_score` (clamped to `0.0..=1.0`).
    #[must_use]
    pub fn with_min_score(mut self, min_score: f32) -> Self {
        self.min_score = min_score.clamp(0.0, 1.0);
        self
    }

    /// The enabled categories.
    pub fn categories(&self) -> CategorySet {
        self.categories
    }

    /// The minimum score.
    pub fn min_score(&self) -> f32 {
        self.min_score
    }

    /// The identifiers in `text`: non-overlapping, sorted by start, byte offsets.
    pub fn detect(&self, text: &str) -> Vec<Span> {
        detect::spans(text, self.lower_case_names, |c| {
            c.score >= self.min_score && self.categories.contains(c.cat)
        })
    }

    /// `text` with every identifier replaced by `[CATEGORY]`.
    pub fn redact(&self, text: &str) -> String {
        replace_spans(text, &self.detect(text), |s, _| {
            format!("[{}]", s.category.name())
        })
    }
}

/// Rebuilds `text` with each span replaced by `f(span, covered text)`.
pub(crate) fn replace_spans(
    text: &str,
    spans: &[Span],
    mut f: impl FnMut(&Span, &str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for s in spans {
        if s.start < at || s.end > text.len() {
            continue;
        }
        out.push_str(text.get(at..s.start).unwrap_or(""));
        out.push_str(&f(s, s.text(text)));
        at = s.end;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

/// [`Detector::detect`] with the shared default detector.
pub fn detect(text: &str) -> Vec<Span> {
    Detector::shared().detect(text)
}

/// [`Detector::redact`] with the shared default detector.
pub fn redact(text: &str) -> String {
    Detector::shared().redact(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_is_send_sync_and_cheap_to_share() {
        fn check<T: Send + Sync>() {}
        check::<Detector>();
        check::<Span>();
    }

    #[test]
    fn high_recall_finds_lower_case_names_in_ordinary_text() {
        // Capitalised words around it make this ordinary text, where a lower-case name is
        // only looked for at a line start, after a title, or (a census name) after a role.
        let text = "Code Blue in ICU, pt zelda quackenbush bed 4, attending unavailable";
        assert_eq!(
            Detector::new().redact(text),
            "Code Blue in ICU, pt [PERSON] bed 4, attending unavailable",
            "after a role word"
        );
        let no_role = "Code Blue in ICU, zelda quackenbush bed 4, attending unavailable";
        assert_eq!(
            Detector::new().redact(no_role),
            no_role,
            "the default setting keeps its precision"
        );
        let text = no_role;
        let redacted = Detector::high_recall().redact(text);
        assert!(
            redacted.ends_with(" in ICU, [PERSON] bed 4, attending unavailable"),
            "{redacted}"
        );
        // Common first and last names in lower case too (the black-box attack stored this one).
        for text in [
            "patient john smith ssn 123-45-6789 coded",
            "Coded: patient john smith in bed 4",
        ] {
            let redacted = Detector::high_recall().redact(text);
            assert!(
                !redacted.contains("john") && !redacted.contains("smith"),
                "{redacted}"
            );
        }
        // Lower-case words that are no name stay.
        assert_eq!(
            Detector::high_recall().redact("none given (refused)"),
            "none given (refused)"
        );
        let d = Detector::new().with_lower_case_names(true);
        assert_eq!(
            d.redact(text),
            "Code Blue in ICU, [PERSON] bed 4, attending unavailable"
        );
    }

    #[test]
    fn configuration_filters_categories_and_scores() {
        let text = "Call 617-555-0143 or email jane.doe@example.com";
        let only_email = Detector::new().with_categories([Category::Email]);
        let spans = only_email.detect(text);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].category, Category::Email);
        assert!(Detector::new().with_min_score(1.0).detect(text).is_empty());
        assert_eq!(Detector::new().with_min_score(7.0).min_score(), 1.0);
    }
}
