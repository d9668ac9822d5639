//! Geographic identifiers smaller than a state: street addresses (US `123 Main St`, the
//! number-after form of most of Europe `Koskikatu 25`, prefix forms `Rue de X 12`, `ul. X 5`),
//! units, P.O. and military boxes, and — inside an address block or next to a state — the
//! city and the postal code. Also `X County` and known US cities after a place preposition.
//!
//! States and countries are not PHI under Safe Harbor and are stepped over, not reported.

use super::Scan;
use crate::Category;
use crate::dict::{self, STREET_ENDINGS};
use crate::lex::{Gap, Kind};

/// A house number: 1–6 digits, or digits with one trailing letter (`12B`).
fn house_number(scan: &Scan<'_>, i: usize) -> bool {
    match scan.kind(i) {
        Some(Kind::Num) => scan.toks[i].len() <= 6,
        Some(Kind::AlNum) => {
            let s = scan.bytes(i);
            let d = s.iter().take_while(|c| c.is_ascii_digit()).count();
            (1..=5).contains(&d) && s.len() - d == 1
        }
        _ => false,
    }
}

fn is_direction(s: &str) -> bool {
    matches!(
        s,
        "N" | "S" | "E" | "W" | "NE" | "NW" | "SE" | "SW" | "North" | "South" | "East" | "West"
    )
}

/// An ordinal street name: `5th`, `21st`.
fn ordinal(s: &str) -> bool {
    let d = s.bytes().take_while(u8::is_ascii_digit).count();
    d > 0 && matches!(&s[d..], "st" | "nd" | "rd" | "th")
}

/// Whether a word ends in a street-name ending (`Koskikatu`, `Hammarvägen`, `Mellemvej`),
/// ignoring case. Title-case ASCII-initial words (the usual case) are lower-cased on the
/// stack.
fn has_street_ending(word: &str) -> bool {
    let b = word.as_bytes();
    if b.is_empty() || b.len() > 40 {
        return false;
    }
    if !b[0].is_ascii() {
        return has_street_ending_lower(word.to_lowercase().as_bytes());
    }
    let mut buf = [0u8; 40];
    for (d, c) in buf.iter_mut().zip(b) {
        *d = c.to_ascii_lowercase();
    }
    has_street_ending_lower(&buf[..b.len()])
}

/// A street ending, and whether it also matches as a suffix (not only as a whole word).
#[derive(Clone, Copy)]
struct Ending {
    text: &'static str,
    suffix: bool,
}

/// Street endings grouped by their last byte, so a word is compared only with the few
/// endings that could match.
static ENDINGS_BY_LAST: std::sync::LazyLock<Vec<Vec<Ending>>> = std::sync::LazyLock::new(|| {
    // Short endings match only as whole words ("tee", "u"), except a few that are common
    // suffixes (Puruntie, Mellemvej, Skogveg).
    const SHORT_SUFFIXES: &[&str] = &["tie", "vej", "veg", "vei", "str", "weg"];
    let mut v = vec![Vec::new(); 256];
    for e in STREET_ENDINGS {
        if let Some(&l) = e.as_bytes().last() {
            v[l as usize].push(Ending {
                text: e,
                suffix: e.chars().count() >= 4 || SHORT_SUFFIXES.contains(e),
            });
        }
    }
    v
});

/// [`has_street_ending`] for a lower-cased word's bytes (a suffix of whole characters is a
/// suffix of bytes, and the other way round).
fn has_street_ending_lower(lower: &[u8]) -> bool {
    let Some(&last) = lower.last() else {
        return false;
    };
    ENDINGS_BY_LAST[last as usize].iter().any(|e| {
        let e_len = e.text.len();
        ends_with_bytes(lower, e.text.as_bytes())
            && (lower.len() == e_len || (lower.len() > e_len + 2 && e.suffix))
    })
}

/// `w.ends_with(e)`, compared from the end: the words and endings are a few bytes, and most
/// pairs differ in the second last (the last is the same by construction).
fn ends_with_bytes(w: &[u8], e: &[u8]) -> bool {
    let Some(off) = w.len().checked_sub(e.len()) else {
        return false;
    };
    let mut k = e.len();
    while k > 0 {
        k -= 1;
        if w.get(off + k) != e.get(k) {
            return false;
        }
    }
    true
}

/// Whether a whole word is a street word (`Strasse`, `út`), ignoring case.
fn is_street_word(word: &str) -> bool {
    let Some(&last) = word.as_bytes().last() else {
        return false;
    };
    ENDINGS_BY_LAST[last.to_ascii_lowercase() as usize]
        .iter()
        .any(|e| {
            let e = e.text;
            e.len() == word.len() && (word.eq_ignore_ascii_case(e) || word.to_lowercase() == *e)
        })
}

/// An address shape starting at token `i` (with the block of city, postal code and country
/// lines after a street). Returns the token after what it took.
///
/// Most tokens start none: the cheap tests here, which every shape needs one of, rule them
/// out before [`at_full`] looks.
#[inline(always)]
pub(super) fn at(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    let may = match t.kind {
        Kind::Num | Kind::AlNum => street_may_follow(scan, i),
        Kind::Word => {
            // A unit or a street prefix; a word with a street ending and a house number one
            // or two words on (`ending_street`'s first tests); for a capitalised word a city
            // before a comma and a state, or a county; a place after a place preposition,
            // with a postal code after it or, for a title-case word, a known city.
            let small = scan.info_small(i);
            small.has(dict::UNIT | dict::STREET_PREFIX)
                || (t.len() >= 3
                    && small.ctx_code() == 0
                    && !small.has(dict::FUNCTION | dict::FILLER)
                    && number_within(scan, i, 2)
                    && (num_follows(scan, i + 1) || num_follows(scan, i + 2)))
                || (t.is_title()
                    // (The comma comes within four tokens: a quick test first.)
                    && (((i + 1..=i + 4).any(|c| scan.is_punct(c, b','))
                        && city_before_comma(scan, i).is_some())
                        || (scan.gap(i + 1) == Gap::Space
                            && matches!(scan.bytes(i + 1), b"County" | b"Parish" | b"Borough"))))
                || (i > 0
                    && scan.gap(i) == Gap::Space
                    && scan.info_small(i - 1).has(dict::PLACE_CUE)
                    // A postal code after (`city_postal`), or a known city (`known_city`). A
                    // title-case word's small facts are its full facts; a short all-capital
                    // word's are not, and asking for more here would change what the name
                    // family later reads for it.
                    && (number_within(scan, i, 5)
                        || ((t.is_title()
                            || (t.all_upper() && t.len() > 3 && scan.toks[i - 1].all_upper()))
                            && small.has(dict::CITY | dict::PLACE_HEAD))))
        }
        _ => false,
    };
    if may { at_full(scan, i) } else { None }
}

/// [`at`] once the cheap tests have passed (for a number, [`street_may_follow`]).
#[inline(never)]
fn at_full(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    let found = match t.kind {
        // (`at` has found that a street name may follow: it calls this for a number only
        // then.)
        Kind::Num | Kind::AlNum => us_street(scan, i)
            .or_else(|| prefix_street(scan, i))
            .or_else(|| ending_street(scan, i))
            .or_else(|| sandwich_street(scan, i)),
        Kind::Word => {
            let small = scan.info_small(i);
            if small.has(dict::UNIT) {
                po_box(scan, i).or_else(|| unit(scan, i).map(|e| (i, e)))
            } else if small.has(dict::STREET_PREFIX) {
                prefix_street(scan, i)
            } else if number_within(scan, i, 2) {
                ending_street(scan, i)
            } else {
                None
            }
        }
        _ => None,
    };
    if let Some((s, e)) = found {
        scan.emit(s, e, Category::StreetAddress, 0.9);
        return Some(block(scan, e).max(e + 1));
    }
    if t.kind != Kind::Word {
        return None;
    }
    if t.is_cap() {
        city_state(scan, i)
            .or_else(|| county(scan, i))
            .or_else(|| city_postal(scan, i))
            .or_else(|| known_city(scan, i))
    } else if number_within(scan, i, 5) {
        city_postal(scan, i)
    } else {
        None
    }
}

/// Whether a street name could follow the number at `i`: a capitalised word (or a second
/// number, then one), a street prefix, or lower-case words and another number.
fn street_may_follow(scan: &mut Scan<'_>, i: usize) -> bool {
    let mut j = i + 1;
    if scan.gap(j) != Gap::Space {
        return false;
    }
    if scan.kind(j) == Some(Kind::Num) {
        j += 1;
        if scan.gap(j) != Gap::Space {
            return false;
        }
    }
    let Some(&t) = scan.tok(j) else { return false };
    match t.kind {
        Kind::Word if t.is_cap() => true,
        Kind::Word => scan.info_small(j).has(dict::STREET_PREFIX) || number_within(scan, j, 4),
        Kind::AlNum => true, // 5th Ave
        _ => false,
    }
}

/// Whether a number token comes within `k` tokens after `i` (a `.` may sit between).
pub(super) fn number_within(scan: &Scan<'_>, i: usize, k: usize) -> bool {
    // The last number up to the end of the window, if any, is inside it.
    let last = (i + k + 1).min(scan.len().saturating_sub(1));
    i < last
        && scan
            .toks
            .get(last)
            .is_some_and(|t| (t.num_back as usize) < last - i)
}

/// A line that is a number, one to four words and a number: the shape of most of the
/// world's addresses written by a generator or a form (`20789 Allika 46`,
/// `4596 Tylova 285`, `0138 Brisas 6802`). Words must be capitalised or not English,
/// and the number after must not be followed by a unit.
fn sandwich_street(scan: &mut Scan<'_>, i: usize) -> Option<(usize, usize)> {
    if scan.kind(i) != Some(Kind::Num) || scan.toks[i].len() > 6 {
        return None;
    }
    let mut j = i;
    let mut words = 0;
    let mut english = 0;
    loop {
        let k = j + 1;
        if scan.gap(k) != Gap::Space || scan.is_used(k) {
            return None;
        }
        let t = *scan.tok(k)?;
        match t.kind {
            Kind::Word => {
                let info = scan.info_full(k);
                if info.has(dict::MONTH | dict::WEEKDAY) {
                    return None; // 14 Sep 1950 is a date
                }
                let particle = t.is_lower() && info.has(dict::PARTICLE);
                if !(t.is_cap() || particle || !info.has(dict::ENGLISH)) {
                    return None;
                }
                // Vital signs and lab shorthand between numbers (`HR 108 BP 98/68`) are no
                // street name.
                if info.has(dict::CLINICAL) && !info.has(dict::FIRST | dict::LAST | dict::CITY) {
                    return None;
                }
                if info.has(dict::ENGLISH) && !particle {
                    english += 1;
                }
                words += 1;
                j = k;
                // Hyphenated names: Langeskov-Centret.
                while scan.is_punct(j + 1, b'-')
                    && scan.gap(j + 1) == Gap::None
                    && scan.kind(j + 2) == Some(Kind::Word)
                    && scan.gap(j + 2) == Gap::None
                {
                    j += 2;
                }
                if words > 4 {
                    return None;
                }
            }
            Kind::Num if words > 0 && house_number(scan, k) => {
                let after = k + 1;
                // A percentage or the first half of a ratio (`TO 40%`, `BP 98/68`).
                if scan.gap(after) == Gap::None
                    && (scan.is_punct(after, b'%') || scan.is_punct(after, b'/'))
                {
                    return None;
                }
                if scan.kind(after) == Some(Kind::Word) && scan.gap(after) == Gap::Space {
                    let w = scan.s(after);
                    if UNIT_WORDS.iter().any(|u| w.eq_ignore_ascii_case(u)) {
                        return None;
                    }
                }
                // All-English words ("page 12 Figure 3") need an address cue.
                if english == words && !cue_before(scan, i) {
                    return None;
                }
                let mut e = k;
                if scan.is_punct(e + 1, b'.') && scan.gap(e + 1) == Gap::None {
                    e += 1;
                }
                return Some((i, e));
            }
            _ => return None,
        }
    }
}

/// Measurement words after a number that make "2 Tylenol 500 mg" a dose, not an address.
const UNIT_WORDS: &[&str] = &[
    "mg", "mcg", "g", "kg", "ml", "l", "units", "unit", "tabs", "tablets", "times", "days",
    "weeks", "months", "years", "hours", "minutes", "patients", "people", "cases", "mmhg", "bpm",
    "percent", "lbs", "lb", "cm", "mm", "km", "miles", "pages", "cc",
];

/// An address cue (`lives at`, `address:`) within three tokens before `i`.
fn cue_before(scan: &mut Scan<'_>, i: usize) -> bool {
    if i == 0 || scan.gap(i) >= Gap::Line {
        return true; // a line of its own
    }
    (1..=3).any(|d| {
        i >= d
            && scan.kind(i - d) == Some(Kind::Word)
            && scan.info_small(i - d).has(dict::ADDRESS_CUE)
    })
}

/// `P.O. Box 123`, `PO Box 123`, `Post Office Box 123`, `PSC 1234, Box 567`,
/// `Unit 1234 Box 567`, `APO AE 12345`, `USNS Comfort`.
fn po_box(scan: &mut Scan<'_>, i: usize) -> Option<(usize, usize)> {
    let s = scan.s(i);
    let mut j;
    if s.eq_ignore_ascii_case("p") && scan.is_punct(i + 1, b'.') && scan.is(i + 2, "o") {
        j = i + 2;
        if scan.is_punct(j + 1, b'.') {
            j += 1;
        }
        if !scan.is(j + 1, "box") {
            return None;
        }
        j += 1;
    } else if s.eq_ignore_ascii_case("po") && scan.is(i + 1, "box") {
        j = i + 1;
    } else if s.eq_ignore_ascii_case("postbox") || s.eq_ignore_ascii_case("postfach") {
        j = i;
    } else if s.eq_ignore_ascii_case("post") && scan.is(i + 1, "office") && scan.is(i + 2, "box") {
        j = i + 2;
    } else if (s == "PSC" || s.eq_ignore_ascii_case("unit") || s == "CMR")
        && scan.kind(i + 1) == Some(Kind::Num)
    {
        let mut k = i + 1;
        if scan.is_punct(k + 1, b',') {
            k += 1;
        }
        if scan.is(k + 1, "box") && scan.kind(k + 2) == Some(Kind::Num) {
            return Some((i, k + 2));
        }
        return None;
    } else if matches!(s, "APO" | "FPO" | "DPO" | "apo" | "fpo" | "dpo") {
        let code = scan.s(i + 1);
        if matches!(code.to_ascii_uppercase().as_str(), "AA" | "AE" | "AP")
            && scan.kind(i + 2) == Some(Kind::Num)
        {
            return Some((i, i + 2));
        }
        return None;
    } else if matches!(s, "USNS" | "USS" | "USNV" | "USCGC" | "USCGS") {
        let mut k = i;
        while k < i + 3 && scan.kind(k + 1) == Some(Kind::Word) && scan.toks[k + 1].is_cap() {
            k += 1;
        }
        return (k > i).then_some((i, k));
    } else {
        return None;
    }
    (scan.kind(j + 1) == Some(Kind::Num)).then_some((i, j + 1))
}

/// US form: house number, optional direction, 1–4 capitalised name words, a suffix, an
/// optional direction: `1659 Hoog St`, `221B Baker Street`, `12 N 5th Ave`.
fn us_street(scan: &mut Scan<'_>, i: usize) -> Option<(usize, usize)> {
    if !house_number(scan, i) {
        return None;
    }
    let mut start = i;
    let mut j = i;
    // Building and street number both given: "3536 1659 Hoog St".
    if scan.kind(j + 1) == Some(Kind::Num) && scan.gap(j + 1) == Gap::Space {
        j += 1;
    }
    let mut words = 0;
    loop {
        let k = j + 1;
        if scan.gap(k) != Gap::Space || scan.is_used(k) {
            return None;
        }
        let &t = scan.tok(k)?;
        let s = scan.s(k);
        let is_name_word = match t.kind {
            Kind::Word => t.is_cap() || (t.is_lower() && words > 0 && s.len() <= 3),
            Kind::AlNum => ordinal(s),
            _ => false,
        };
        if !is_name_word {
            return None;
        }
        if words > 0 && t.kind == Kind::Word && t.is_cap() {
            let info = scan.info_small(k);
            if info.has(dict::STREET_SUFFIX) {
                let mut e = k;
                if scan.is_punct(e + 1, b'.') && scan.gap(e + 1) == Gap::None {
                    e += 1;
                }
                if scan.gap(e + 1) == Gap::Space && is_direction(scan.s(e + 1)) {
                    e += 1;
                }
                if j > i && scan.s(i).len() > 5 {
                    start = j; // a long first number is more likely not part of it
                }
                return Some((start, e));
            }
        }
        if words == 0 && is_direction(s) {
            j = k;
            if scan.is_punct(j + 1, b'.') {
                j += 1;
            }
            continue;
        }
        words += 1;
        if words > 4 {
            return None;
        }
        j = k;
    }
}

/// Prefix form: `Rue de Piétrain 371`, `ul. Narewska 94`, `Via delle Coste 41`, and the
/// number-first `56 rue La Boétie`.
fn prefix_street(scan: &mut Scan<'_>, i: usize) -> Option<(usize, usize)> {
    let (start, p) = if house_number(scan, i) && scan.gap(i + 1) == Gap::Space {
        // Building and street number both given: "70248 31 Rue Tachkent".
        if house_number(scan, i + 1) && scan.gap(i + 2) == Gap::Space {
            (i, i + 2)
        } else {
            (i, i + 1)
        }
    } else {
        (i, i)
    };
    let &t = scan.tok(p)?;
    if t.kind != Kind::Word || t.len() > 12 {
        return None;
    }
    if start == p && !(p + 1..(p + 8).min(scan.len())).any(|k| scan.kind(k) == Some(Kind::Num)) {
        return None;
    }
    if !scan.info_small(p).has(dict::STREET_PREFIX) {
        return None;
    }
    let info = scan.info_full(p);
    if !t.is_cap() && info.has(dict::ENGLISH) && start == p {
        return None;
    }
    // English-looking prefixes ("Place", "Route", "Avenue") need a number on one side.
    let mut j = p;
    if scan.is_punct(j + 1, b'.') && scan.gap(j + 1) == Gap::None {
        j += 1;
    }
    let mut words = 0;
    while words < 5 {
        let k = j + 1;
        if scan.gap(k) != Gap::Space {
            break;
        }
        let Some(&w) = scan.tok(k) else { break };
        if w.kind != Kind::Word || scan.is_used(k) {
            break;
        }
        let winfo = scan.info_full(k);
        let particle = w.is_lower() && winfo.has(dict::PARTICLE);
        let foreign = w.is_lower() && !winfo.has(dict::ENGLISH) && w.len() > 3;
        if !(w.is_cap() || particle || foreign || (t.is_lower() && w.is_lower() && w.len() > 3)) {
            break;
        }
        words += 1;
        j = k;
    }
    if words == 0 {
        return None;
    }
    let k = j + 1;
    if scan.gap(k) == Gap::Space && house_number(scan, k) {
        return Some((start, k));
    }
    (start < p).then_some((start, j))
}

/// A number at token `k` (or after a `.` there), after a space.
fn num_follows(scan: &Scan<'_>, k: usize) -> bool {
    let k = if scan.is_punct(k, b'.') { k + 1 } else { k };
    scan.kind(k) == Some(Kind::Num) && scan.gap(k) == Gap::Space
}

/// Number-after form of one word with a street ending, optionally after a house number
/// and a capitalised word: `Koskikatu 25`, `5049 Harjukuja 54`, `Augsburger Strasse 36`.
fn ending_street(scan: &mut Scan<'_>, i: usize) -> Option<(usize, usize)> {
    let mut start = i;
    let mut w = i;
    if house_number(scan, i) && scan.gap(i + 1) == Gap::Space {
        w = i + 1;
    }
    let &t = scan.tok(w)?;
    if t.kind != Kind::Word || t.len() < 3 {
        return None;
    }
    // Keywords, function words and fillers ("MRN 123", "the 3") are not street names.
    let small = scan.info_small(w);
    if small.ctx_code() != 0 || small.has(dict::FUNCTION | dict::FILLER) {
        return None;
    }
    // The shape ends in a house number one or two words on: test that before the endings.
    if !num_follows(scan, w + 1) && !num_follows(scan, w + 2) {
        return None;
    }
    let mut street_word = w;
    if !has_street_ending(scan.s(w)) {
        // A capitalised word, then the street word: "Augsburger Strasse".
        let nw = w + 1;
        if !(t.is_cap() && scan.gap(nw) == Gap::Space && scan.kind(nw) == Some(Kind::Word)) {
            return None;
        }
        if !is_street_word(scan.s(nw)) {
            return None;
        }
        street_word = nw;
    } else if !t.is_cap() && scan.info_full(w).has(dict::ENGLISH) {
        return None;
    }
    let mut k = street_word + 1;
    if scan.is_punct(k, b'.') && scan.gap(k) == Gap::None {
        k += 1;
    }
    if scan.gap(k) != Gap::Space || !house_number(scan, k) {
        return None;
    }
    if w == i + 1 {
        start = i;
    }
    Some((start, k))
}

/// `Apt. 839`, `Suite 727`, `Unit 5`, `Apt #4B`, `unit 1009`.
fn unit(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let &t = scan.tok(i)?;
    if t.kind != Kind::Word {
        return None;
    }
    if !scan.info_small(i).has(dict::UNIT) {
        return None;
    }
    let s = scan.s(i);
    if !["apt", "apartment", "suite", "ste", "unit", "bldg", "trlr"]
        .iter()
        .any(|u| s.eq_ignore_ascii_case(u))
    {
        return None;
    }
    let mut j = i;
    if scan.is_punct(j + 1, b'.') && scan.gap(j + 1) == Gap::None {
        j += 1;
    }
    if scan.is_punct(j + 1, b'#') {
        j += 1;
    }
    let k = j + 1;
    if scan.gap(k) > Gap::Space {
        return None;
    }
    let ok = match scan.kind(k) {
        Some(Kind::Num) => scan.toks[k].len() <= 6,
        Some(Kind::AlNum) => scan.toks[k].len() <= 6,
        Some(Kind::Word) => scan.toks[k].len() == 1 && scan.toks[k].all_upper(),
        _ => false,
    };
    ok.then_some(k)
}

/// After a street line: more units, the city, the state (skipped), the postal code, the
/// country (skipped), across commas, line breaks and quoting marks. Returns the token after.
fn block(scan: &mut Scan<'_>, mut e: usize) -> usize {
    let mut paras = 0;
    for _ in 0..9 {
        let mut j = e + 1;
        let mut punct = 0;
        let mut separated = scan.gap(j) >= Gap::Line;
        while scan.kind(j) == Some(Kind::Punct) && punct < 4 {
            let c = scan.toks[j].ch;
            // Quoting marks only count at a line start ("> ", "??? ").
            let quoting = matches!(c, b'>' | b'?' | b'|' | b'-')
                && (scan.gap(j) >= Gap::Line || (j > 0 && scan.is_punct(j - 1, c)));
            if !(c == b',' || c == b';' || quoting) {
                break;
            }
            j += 1;
            punct += 1;
            separated = true;
        }
        separated |= scan.gap(j) >= Gap::Line;
        if scan.gap(j) == Gap::Para {
            paras += 1;
            if paras > 1 {
                break;
            }
        }
        if j >= scan.len() || scan.is_used(j) {
            break;
        }
        if let Some(u) = unit(scan, j) {
            scan.emit(j, u, Category::StreetAddress, 0.85);
            e = u;
            continue;
        }
        if let Some((s, u)) = us_street(scan, j)
            .or_else(|| ending_street(scan, j))
            .or_else(|| sandwich_street(scan, j))
            .or_else(|| prefix_street(scan, j))
        {
            scan.emit(s, u, Category::StreetAddress, 0.85);
            e = u;
            continue;
        }
        if let Some(p) = postal(scan, j) {
            scan.emit(j, p, Category::ZipCode, 0.85);
            e = p;
            continue;
        }
        // A run of capitalised words on one line.
        let Some(&t) = scan.tok(j) else { break };
        if t.kind != Kind::Word {
            break;
        }
        let mut k = j;
        while k + 1 < scan.len()
            && k < j + 3
            && scan.gap(k + 1) == Gap::Space
            && scan.kind(k + 1) == Some(Kind::Word)
            && (scan.toks[k + 1].is_cap() || scan.info_small(k + 1).has(dict::PARTICLE))
        {
            k += 1;
        }
        let info = scan.info_full(j);
        let whole = if k > j { scan.phrase_info(j, k) } else { info };
        if t.is_lower() && t.len() <= 3 {
            e = j; // a stray short word in a block ("nan"): step over
            continue;
        }
        if t.len() == 1 {
            break; // "I am in …"
        }
        // Lower-case text: a place name is a run of words that are not English; a country
        // is stepped over.
        if !t.is_cap() && whole.has(dict::COUNTRY) {
            e = k;
            continue;
        }
        if !t.is_cap() && info.has(dict::ENGLISH) {
            break;
        }
        if whole.has(dict::COUNTRY | dict::STATE)
            || (t.all_upper() && t.len() == 2 && info.has(dict::STATE_CODE))
            || (k == j && info.has(dict::COUNTRY | dict::STATE))
        {
            e = k;
            continue;
        }
        if scan.is_punct(k + 1, b':') || !separated {
            break; // a label ("Phone:") ends the block; a city follows a comma or a line break
        }
        scan.emit(j, k, Category::City, 0.8);
        e = k;
    }
    e + 1
}

/// A postal code at token `i`: 3–6 digits (`53650`, `700`), with a second part (`53-320`,
/// `340 12`, `3610-114`, `7412 SL`), or Canadian/British letter-digit forms (`B0J 2H0`).
/// Returns its last token.
fn postal(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let end = postal_shape(scan, i)?;
    // More digits after it on the line make it part of a phone number.
    let n = end + 1;
    if scan.gap(n) <= Gap::Space
        && (scan.kind(n) == Some(Kind::Num)
            || (scan.is_punct(n, b'-') && scan.kind(n + 1) == Some(Kind::Num)))
    {
        return None;
    }
    Some(end)
}

fn postal_shape(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    let s = scan.s(i);
    match t.kind {
        // Polish: 53-320.
        Kind::Num
            if s.len() == 2
                && scan.is_punct(i + 1, b'-')
                && scan.gap(i + 1) == Gap::None
                && scan.kind(i + 2) == Some(Kind::Num)
                && scan.toks[i + 2].len() == 3 =>
        {
            Some(i + 2)
        }
        Kind::Num if (3..=6).contains(&s.len()) => {
            let n = i + 1;
            if scan.is_punct(n, b'-') && scan.gap(n) == Gap::None {
                if scan.kind(n + 1) == Some(Kind::Num) && scan.toks[n + 1].len() <= 4 {
                    return Some(n + 1);
                }
            } else if scan.gap(n) == Gap::Space {
                let ns = scan.s(n);
                if scan.kind(n) == Some(Kind::Num) && ns.len() == 2 && s.len() == 3 {
                    return Some(n);
                }
                if scan.kind(n) == Some(Kind::Word)
                    && ns.len() == 2
                    && scan.toks[n].all_upper()
                    && !scan.info_full(n).has(dict::STATE_CODE)
                {
                    return Some(n);
                }
            }
            Some(i)
        }
        Kind::AlNum if s.len() == 3 && scan.kind(i + 1) == Some(Kind::AlNum) => {
            let ns = scan.s(i + 1);
            let shape = |x: &str| x.len() == 3 && x.bytes().any(|c| c.is_ascii_digit());
            (shape(ns) && scan.gap(i + 1) == Gap::Space).then_some(i + 1)
        }
        _ => None,
    }
}

/// The shape of [`city_state`] in the tokens alone, before any look-up: a run of one to
/// four title-case words starting at token `i` (not inside a longer run), a comma right
/// after it, and a word after a space that could be a state (two capitals, or title case).
/// Returns the run's last token. Many capitalised words have a comma somewhere after them;
/// few have this.
fn city_before_comma(scan: &Scan<'_>, i: usize) -> Option<usize> {
    let t = scan.tok(i)?;
    if t.kind != Kind::Word || !t.is_title() {
        return None;
    }
    if i > 0
        && scan.gap(i) == Gap::Space
        && scan.kind(i - 1) == Some(Kind::Word)
        && scan.toks[i - 1].is_title()
    {
        return None; // start at the first word of a run
    }
    let mut k = i;
    while k < i + 3
        && scan.gap(k + 1) == Gap::Space
        && scan.kind(k + 1) == Some(Kind::Word)
        && scan.toks[k + 1].is_title()
    {
        k += 1;
    }
    let c = k + 1;
    if !scan.is_punct(c, b',') {
        return None;
    }
    let s = scan.tok(c + 1)?;
    let state_like = s.kind == Kind::Word
        && scan.gap(c + 1) == Gap::Space
        && ((s.all_upper() && s.len() == 2) || s.is_title());
    state_like.then_some(k)
}

/// `Springfield, IL 62704`, `Springfield, Illinois`, `Austin, TX`: the words before the
/// state are the city; a ZIP after it is reported too.
fn city_state(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let k = city_before_comma(scan, i)?;
    let st = k + 2;
    let &s = scan.tok(st)?;
    let code = s.all_upper() && s.len() == 2 && scan.info_full(st).has(dict::STATE_CODE);
    let mut st_end = st;
    let name = s.is_title()
        && (scan.info_full(st).has(dict::STATE) || {
            let two = scan.phrase_info(st, st + 1).has(dict::STATE);
            if two {
                st_end = st + 1;
            }
            two
        });
    if !code && !name {
        return None;
    }
    let z = st_end + 1;
    let zip = scan.kind(z) == Some(Kind::Num)
        && scan.toks[z].len() == 5
        && scan.gap(z) <= Gap::Space
        && !scan.is_used(z);
    // Without a ZIP, the words must not be ordinary English ("Yes, OR").
    let whole = scan.phrase_info(i, k);
    let english_only = (i..=k).all(|w| {
        let f = scan.info_full(w);
        f.has(dict::ENGLISH) && !f.has(dict::CITY | dict::FIRST | dict::LAST)
    });
    if !zip && english_only && !whole.has(dict::CITY) {
        return None;
    }
    scan.emit(i, k, Category::City, if zip { 0.85 } else { 0.75 });
    if zip {
        let mut ze = z;
        if scan.is_punct(z + 1, b'-') && scan.kind(z + 2) == Some(Kind::Num) {
            ze = z + 2;
        }
        scan.emit(z, ze, Category::ZipCode, 0.95);
        return Some(ze + 1);
    }
    Some(st_end + 1)
}

/// `Orange County`, `Jefferson Parish`.
fn county(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    if t.kind != Kind::Word || !t.is_title() {
        return None;
    }
    let n = i + 1;
    let s = scan.s(n);
    if scan.gap(n) == Gap::Space && matches!(s, "County" | "Parish" | "Borough") {
        scan.emit(i, n, Category::City, 0.8);
        return Some(n + 1);
    }
    None
}

/// A place and a postal code after a place preposition: `in Costamezzana 43015`,
/// `in ARENDAL 4844`, `in barra de carrasco 15000`. A four-digit number that could be a year
/// is not taken.
fn city_postal(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    if t.kind != Kind::Word || i == 0 || scan.gap(i) != Gap::Space {
        return None;
    }
    if !scan.info_small(i - 1).has(dict::PLACE_CUE) {
        return None;
    }
    let mut k = i;
    while k < i + 4
        && scan.gap(k + 1) == Gap::Space
        && scan.kind(k + 1) == Some(Kind::Word)
        && (scan.toks[k + 1].is_cap()
            || !t.is_cap()
            || (scan.toks[k + 1].len() <= 3 && scan.kind(k + 2) == Some(Kind::Word)))
    {
        k += 1;
    }
    let z = k + 1;
    if scan.gap(z) != Gap::Space || scan.kind(z) != Some(Kind::Num) {
        return None;
    }
    if !scan.info_small(i - 1).has(dict::PLACE_CUE) {
        return None;
    }
    let zs = scan.s(z);
    let year_like = zs.len() == 4 && zs.parse::<u32>().is_ok_and(|y| (1800..=2099).contains(&y));
    let ze = postal(scan, z).unwrap_or(z);
    let split = ze > z && zs.len() == 3;
    if !((4..=5).contains(&zs.len()) || split) || year_like {
        return None;
    }
    let english = (i..=k).all(|w| {
        let f = scan.info_full(w);
        f.has(dict::ENGLISH) || (!scan.toks[w].is_cap() && !f.has(dict::PARTICLE) && f.flags() != 0)
    });
    let lower_english = !t.is_cap()
        && (i..=k).any(|w| {
            scan.info_full(w).has(dict::ENGLISH) && !scan.info_full(w).has(dict::PARTICLE)
        });
    if english || lower_english {
        return None;
    }
    // Clinical shorthand is no place ("from EW at 0945"), and a four-digit number after
    // "at" that reads as a time of day is a time.
    let clinical = (i..=k).any(|w| {
        let f = scan.info_full(w);
        scan.toks[w].len() > 1
            && f.has(dict::CLINICAL)
            && !f.has(dict::FIRST | dict::LAST | dict::CITY)
    });
    let time = zs.len() == 4
        && scan.is(z - 1, "at")
        && zs.parse::<u32>().is_ok_and(|v| v <= 2359 && v % 100 < 60);
    if clinical || time {
        return None;
    }
    scan.emit(i, k, Category::City, 0.7);
    scan.emit(z, ze, Category::ZipCode, 0.8);
    Some(ze + 1)
}

/// A known US city (one to three words) after a place preposition: `lives in Springfield`.
fn known_city(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    // In capitals after a cue in capitals ("LIVES IN GREENVILLE"): a note written in
    // capitals, where a city looks like every other word.
    let shouted = t.all_upper() && i > 0 && scan.toks[i - 1].all_upper();
    if t.kind != Kind::Word || !(t.is_title() || shouted) || i == 0 || scan.gap(i) != Gap::Space {
        return None;
    }
    if !scan.info_small(i - 1).has(dict::PLACE_CUE) {
        return None;
    }
    let info = scan.info_full(i);
    if !info.has(dict::CITY | dict::PLACE_HEAD) {
        return None;
    }
    // "of Wilson's disease", "of Jackson-Pratt drain": an eponym, not the town.
    let head = if scan.is_punct(i + 1, b'\'') && scan.is(i + 2, "s") {
        i + 3
    } else {
        i + 1
    };
    if scan.info_small(head).has(dict::EPONYM_HEAD) || scan.is_punct(i + 1, b'-') {
        return None;
    }
    let mut best = None;
    // A capitalised common word mid-sentence after "in" or "from" is a proper noun:
    // "grew up in Paramount".
    let strong_cue = scan.is(i - 1, "in") || scan.is(i - 1, "from");
    if info.has(dict::CITY)
        && !info.has(dict::COUNTRY | dict::STATE)
        && (!info.has(dict::ENGLISH) || strong_cue)
    {
        best = Some(i);
    }
    if info.has(dict::PLACE_HEAD) {
        for k in i + 1..i + 3 {
            if scan.gap(k) != Gap::Space
                || scan.kind(k) != Some(Kind::Word)
                || !(scan.toks[k].is_title() || (shouted && scan.toks[k].all_upper()))
            {
                break;
            }
            let p = scan.phrase_info(i, k);
            if p.has(dict::COUNTRY | dict::STATE) {
                return Some(k + 1);
            }
            if p.has(dict::CITY) {
                best = Some(k);
            }
        }
    }
    let e = best?;
    scan.emit(i, e, Category::City, 0.7);
    Some(e + 1)
}
