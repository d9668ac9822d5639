//! Named places smaller than a state that are no address or city (`LOCATION`): hospitals,
//! clinics, nursing homes, rehabilitation centres. Found three ways:
//!
//! - a run of capitalised words ending in a facility word (`Lowell General Hospital`,
//!   `Kowalski Memorial`, `Quincy Medical Center`; `General`, `Manor` and `House` only after
//!   a place word, since "Attorney General" and "White House" are none);
//! - a religious or charitable name (`Sacred Heart`, `Holy Cross`, `St. Luke's`, `Our Lady of
//!   Lourdes`; a single word such as `Mercy` or `Baptist` only after a place word), in lower
//!   case too after one (`from sacred heart`);
//! - an abbreviation after a place word: two to five capitals ending in `H` or `MC`, or a
//!   VA's (`from GH`, `at VAMC`, `transferred from SHH`), unless it is clinical shorthand
//!   (`OSH`, `NH`) or a state's code.
//!
//! A place word is `from`, `at`, `to`, `in` or `via` right before. Scores: 0.85 with a place
//! word or a facility word, 0.75 for a religious name alone.

use super::{Scan, word8, words8};
use crate::Category;
use crate::dict;
use crate::lex::{Gap, Kind};

/// Words before a place: "transferred from", "seen at", "sent to".
const CUES: [u64; 6] = words8(["from", "at", "to", "in", "via", "into"]);

/// Facility words that end a place's name wherever it is (at most eight letters: see
/// [`listed`]).
const FACILITY: [u64; 9] = words8([
    "hospital", "clinic", "memorial", "rehab", "hospice", "va", "vamc", "nursing", "medical",
]);

/// Facility words that end a place's name only after a place word.
const FACILITY_AFTER_CUE: [u64; 5] = words8(["general", "manor", "house", "center", "centre"]);

/// Religious and charitable names that start a hospital's name on their own.
const HEADS: [u64; 4] = words8(["sacred", "holy", "good", "our"]);

/// What may follow a head word: `Sacred Heart`, `Holy Cross`, `Our Lady` (and
/// `Samaritan`, longer than eight letters, compared apart).
const HEAD_SECONDS: [u64; 10] = words8([
    "heart", "cross", "family", "name", "spirit", "redeemer", "trinity", "shepherd", "lady", "hope",
]);

/// Single names that are a hospital after a place word ("transferred from Mercy"); the
/// longer ones in [`ALONE_AFTER_CUE_LONG`].
const ALONE_AFTER_CUE: [u64; 5] = words8(["mercy", "lutheran", "baptist", "kindred", "shriners"]);
const ALONE_AFTER_CUE_LONG: [&str; 4] = ["providence", "methodist", "adventist", "presbyterian"];

/// Whether token `i` is one of the (at most eight-letter) words of `list`, in any case.
/// Longer words all pack alike ([`word8`]), so they never match here.
fn listed(scan: &Scan<'_>, i: usize, list: &[u64]) -> bool {
    let b = scan.bytes(i);
    b.len() <= 8 && list.contains(&word8(b))
}

/// Whether a place word stands right before token `i` (a space between).
fn cue_before(scan: &Scan<'_>, i: usize) -> bool {
    i > 0 && scan.gap(i) == Gap::Space && listed(scan, i - 1, &CUES)
}

/// Whether token `i` is a place word (`from`, `at`, `to` …): a name's run in a note written
/// in capitals stops before one, so that what follows is looked at as a place too.
pub(super) fn is_cue(scan: &Scan<'_>, i: usize) -> bool {
    listed(scan, i, &CUES)
}

/// Verbs of moving a patient: after "transferred from", "sent to", "admitted from" a
/// capitalised name is a place (a hospital's proper name alone: "transferred from Hardy").
const MOVES: [u64; 8] = words8([
    "transfer", "transfd", "sent", "admitted", "returned", "came", "arrived", "d/c",
]);

/// Whether a place word right before token `i` follows a verb of moving a patient.
fn move_cue_before(scan: &Scan<'_>, i: usize) -> bool {
    cue_before(scan, i)
        && i > 1
        && scan.gap(i - 1) == Gap::Space
        && (listed(scan, i - 2, &MOVES) || scan.is(i - 2, "transferred"))
}

/// Whether a lower-case word may start a place after a place word (`from sacred heart`):
/// a byte comparison, before anything is looked up.
pub(super) fn lower_head(raw: &[u8]) -> bool {
    matches!(
        raw,
        b"st" | b"saint" | b"sacred" | b"holy" | b"good" | b"our"
    )
}

/// A place starting at capitalised word token `i`, or at a lower-case one after a place
/// word. Returns the token after it.
pub(super) fn at(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    if t.kind != Kind::Word || scan.is_used(i) {
        return None;
    }
    let cue = cue_before(scan, i);
    if !t.is_cap() && !cue {
        return None;
    }
    if scan.is(i, "st") || scan.is(i, "saint") {
        return saint(scan, i, cue);
    }
    if listed(scan, i, &HEADS) {
        return head(scan, i, cue);
    }
    if !t.is_cap() {
        return None;
    }
    if cue
        && (listed(scan, i, &ALONE_AFTER_CUE) || ALONE_AFTER_CUE_LONG.iter().any(|w| scan.is(i, w)))
    {
        let end = facility_tail(scan, i, true).unwrap_or(i);
        scan.emit(i, end, Category::Location, 0.85);
        return Some(end + 1);
    }
    if cue && t.all_upper() && abbreviation(scan, i) {
        scan.emit(i, i, Category::Location, 0.85);
        return Some(i + 1);
    }
    facility_run(scan, i, cue)
}

/// `St. Luke's`, `Saint Francis Hospital`, `st. guneet's`: with a place word before, a
/// facility word after, or a possessive.
fn saint(scan: &mut Scan<'_>, i: usize, cue: bool) -> Option<usize> {
    let mut j = i + 1;
    if scan.is_punct(j, b'.') && scan.gap(j) == Gap::None {
        j += 1;
    }
    if scan.gap(j) != Gap::Space || scan.kind(j) != Some(Kind::Word) {
        return None;
    }
    let name_cap = scan.toks[j].is_cap();
    if !(name_cap || cue) {
        return None;
    }
    let mut end = j;
    let possessive =
        scan.is_apostrophe(j + 1) && scan.is(j + 2, "s") && scan.gap(j + 1) == Gap::None;
    if possessive {
        end = j + 2;
    }
    let tail = facility_tail(scan, end, cue);
    if !(cue || possessive || tail.is_some()) {
        return None;
    }
    let end = tail.unwrap_or(end);
    scan.emit(i, end, Category::Location, 0.85);
    Some(end + 1)
}

/// `Sacred Heart`, `Holy Cross Hospital`, `Our Lady of Lourdes`, `good samaritan` (lower case
/// only after a place word).
fn head(scan: &mut Scan<'_>, i: usize, cue: bool) -> Option<usize> {
    let j = i + 1;
    if scan.gap(j) != Gap::Space || scan.kind(j) != Some(Kind::Word) {
        return None;
    }
    if !(listed(scan, j, &HEAD_SECONDS) || scan.is(j, "samaritan")) {
        return None;
    }
    if !scan.toks[i].is_cap() && !cue {
        return None;
    }
    let mut end = j;
    // "Our Lady of Lourdes".
    if scan.is(j, "lady")
        && scan.is(j + 1, "of")
        && scan.kind(j + 2) == Some(Kind::Word)
        && scan.gap(j + 2) == Gap::Space
    {
        end = j + 2;
    }
    let tail = facility_tail(scan, end, cue);
    let score = if cue || tail.is_some() { 0.85 } else { 0.75 };
    let end = tail.unwrap_or(end);
    scan.emit(i, end, Category::Location, score);
    Some(end + 1)
}

/// The facility words right after token `last` (`Hospital`, `Medical Center`, `Nursing
/// Home`; `General`, `Manor`, `House`, `Center` only when `cue`): the last of them.
fn facility_tail(scan: &Scan<'_>, last: usize, cue: bool) -> Option<usize> {
    let mut end = None;
    let mut j = last + 1;
    while scan.gap(j) == Gap::Space
        && scan.kind(j) == Some(Kind::Word)
        && scan.toks[j].is_cap()
        && j <= last + 3
    {
        if listed(scan, j, &FACILITY)
            || (cue && listed(scan, j, &FACILITY_AFTER_CUE))
            || (end.is_some() && scan.is(j, "home"))
        {
            end = Some(j);
        } else if scan.is(j, "center") || scan.is(j, "centre") {
            // "Medical Center", "Rehab Center".
            if end.is_some() {
                end = Some(j);
            } else {
                break;
            }
        } else {
            break;
        }
        j += 1;
    }
    // "Nursing" or "Medical" alone is no place's end.
    end.filter(|&e| !(scan.is(e, "nursing") || scan.is(e, "medical")))
}

/// A run of one to four capitalised words ending in facility words (`Lowell General
/// Hospital`, `Kowalski Memorial`): the place's name.
fn facility_run(scan: &mut Scan<'_>, i: usize, cue: bool) -> Option<usize> {
    // One pass over the run (most are one word): where a facility word first stands.
    let mut last = i;
    let mut tail = None;
    for _ in 0..5 {
        let n = last + 1;
        let ok = scan.gap(n) == Gap::Space
            && scan.kind(n) == Some(Kind::Word)
            && scan.toks[n].is_cap()
            && !scan.is_used(n)
            && !is_cue(scan, n);
        if !ok {
            break;
        }
        if listed(scan, n, &FACILITY) || (cue && listed(scan, n, &FACILITY_AFTER_CUE)) {
            tail = Some(n);
            break;
        }
        last = n;
    }
    let named = |scan: &mut Scan<'_>| {
        !scan
            .info(i)
            .has(dict::FUNCTION | dict::TITLE | dict::ROLE | dict::MONTH | dict::WEEKDAY)
    };
    if let Some(t) = tail
        && let Some(end) = facility_tail(scan, t - 1, cue)
    {
        // "CALL HATBORO HOSPITAL", "Call Good Samaritan Hospital": a verb or role word
        // first is no part of the name.
        let start = if named(scan) { i } else { i + 1 };
        if start < t {
            scan.emit(start, end, Category::Location, 0.85);
            return Some(end + 1);
        }
    }
    // A name alone after a transfer ("transferred from Hardy", "sent to Lawrence General"):
    // the words up to the first that is no name's (at most three).
    if !move_cue_before(scan, i) || !named(scan) {
        return None;
    }
    let stop = dict::FUNCTION
        | dict::CLINICAL
        | dict::ROLE
        | dict::TITLE
        | dict::MONTH
        | dict::WEEKDAY
        | dict::STATE
        | dict::COUNTRY;
    let mut end = None;
    for k in i..=last.min(i + 2) {
        let info = scan.info_full(k);
        let common_word =
            info.has(dict::ENGLISH) && !info.has(dict::FIRST | dict::LAST | dict::CITY);
        if info.has(stop) || common_word || scan.toks[k].len() < 2 {
            break;
        }
        end = Some(k);
    }
    let end = end?;
    scan.emit(i, end, Category::Location, 0.7);
    Some(end + 1)
}

/// An all-capital abbreviation of a hospital (`GH`, `MGH`, `VAMC`, `SHH`, `LMC`): two to five
/// letters ending in `H` or `MC`, or a VA's; not clinical shorthand (`OSH`, `NH`), a state's
/// code, or a keyword.
fn abbreviation(scan: &mut Scan<'_>, i: usize) -> bool {
    let b = scan.bytes(i);
    if !(2..=5).contains(&b.len()) || !b.iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let va = matches!(b, b"VA" | b"VAMC" | b"VAH");
    if !(va || b.ends_with(b"H") || b.ends_with(b"MC")) {
        return false;
    }
    let info = scan.info_full(i);
    va || !(info.has(dict::CLINICAL | dict::STATE_CODE | dict::FUNCTION | dict::CREDENTIAL)
        || info.ctx_code() != 0)
}
