//! Person names. A run of capitalised words (with initials, particles such as `van` and
//! `de`, hyphens and `O'`) is split where an ordinary word or a non-person proper noun sits,
//! and each piece is scored from what its words are — census first name, census surname,
//! common English word, place or brand, or unknown (most foreign names) — and what surrounds
//! it: a title (`Dr.`), a label (`Name:`), a role (`wife`, `patient`, `seen by`), a
//! credential after it (`, MD`), a verb after it (`said`), a sentence start (which makes a
//! capital say nothing).
//!
//! Words that are both names and common words (`Rose`, `Will`, `Brown`) count as names only
//! next to another name or with such context, which keeps `Brown stool` and `May I` out.

use super::Scan;
use crate::Category;
use crate::dict::{self, WordInfo};
use crate::lex::{Gap, Kind, Tok};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    First,
    Last,
    /// Both a name and a common word.
    Ambig,
    /// In no list: most often a foreign or rare name, sometimes a brand or a place.
    Unknown,
    Initial,
    /// A proper noun that is not a census name (a place, a brand, a famous surname): part
    /// of a name next to other name words ("Ubul Csonka"), not a name alone ("Advil").
    Proper,
    NonName,
}

/// How many variants [`Class`] has.
const CLASSES: usize = Class::NonName as usize + 1;

/// One piece of a run of name-like words. A run has at most [`MAX_PARTS`].
#[derive(Clone, Copy, Debug)]
struct Part {
    /// First and last token of the part (an initial includes its dot; `O'Neil` is one part).
    from: usize,
    to: usize,
    class: Class,
    info: WordInfo,
}

/// The most pieces a run has.
const MAX_PARTS: usize = 6;

/// The pieces of a run, built on the stack: a run is built for every capitalised word, and
/// a fixed array costs less to set up than a reused vector costs to hand back and forth.
struct Parts {
    items: [Part; MAX_PARTS],
    len: usize,
}

impl Parts {
    fn new() -> Self {
        // All zero bytes (`First` is the class numbered 0), so the array is set up with a
        // few wide stores; a slot is read only once pushed.
        let empty = Part {
            from: 0,
            to: 0,
            class: Class::First,
            info: WordInfo::default(),
        };
        Parts {
            items: [empty; MAX_PARTS],
            len: 0,
        }
    }

    /// Adds a piece; returns whether the run is now full.
    fn push(&mut self, p: Part) -> bool {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = p;
            self.len += 1;
        }
        self.len >= MAX_PARTS
    }

    fn as_mut_slice(&mut self) -> &mut [Part] {
        let len = self.len.min(MAX_PARTS);
        &mut self.items[..len]
    }
}

fn classify(info: WordInfo, all_upper: bool, len: usize) -> Class {
    if len == 1 {
        return Class::Initial;
    }
    let f = info.has(dict::FIRST);
    let l = info.has(dict::LAST);
    if info.has(dict::CLINICAL) {
        // Clinical vocabulary ("Pt", "NEURO", "Propofol"), in any case: no name, unless it
        // is also a census name ("Will", "Foley"), which context decides.
        return if f || l { Class::Ambig } else { Class::NonName };
    }
    let en = info.has(dict::ENGLISH);
    let non_person = dict::PROPER
        | dict::MEDICAL
        | dict::ORG
        | dict::COUNTRY
        | dict::STATE
        | dict::MONTH
        | dict::WEEKDAY
        | dict::TITLE
        | dict::STREET_SUFFIX
        | dict::CREDENTIAL;
    if info.has(non_person & !dict::PROPER) && !(f || l) {
        return Class::NonName;
    }
    if info.has(dict::PROPER) && !(f || l) && !info.has(dict::ENGLISH) {
        return Class::Proper;
    }
    if info.has(
        dict::MEDICAL
            | dict::MONTH
            | dict::WEEKDAY
            | dict::CREDENTIAL
            | dict::PROPER
            | dict::COUNTRY
            | dict::STATE,
    ) {
        return if f || l { Class::Ambig } else { Class::NonName };
    }
    if all_upper && (len <= 3 || info.ctx_code() != 0 || info.has(dict::ENGLISH) && !(f || l)) {
        // Acronyms (RA, DEA, GU) and shouted headings.
        return Class::NonName;
    }
    if all_upper && !(f || l) {
        // A shouted word in no list: a name in a header ("PATIENT NAME: PUJADAS") when the
        // context says so, not on its own.
        return Class::Proper;
    }
    if len == 1 {
        return Class::Initial;
    }
    match (f, l, en) {
        (_, _, true) if f || l => Class::Ambig,
        (_, _, true) => Class::NonName,
        (true, _, false) => Class::First,
        (false, true, false) => Class::Last,
        _ => Class::Unknown,
    }
}

/// A name starting at word token `i`. Returns the token to go on from (after the whole
/// capitalised run, found or not).
pub(super) fn at(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    if t.kind != Kind::Word {
        return None;
    }
    if t.is_cap() {
        Some(chain(scan, i))
    } else if t.is_lower() && line_start(scan, i) {
        Some(lower_name(scan, i))
    } else {
        None
    }
}

pub(super) fn line_start(scan: &Scan<'_>, i: usize) -> bool {
    if i == 0 || scan.gap(i) >= Gap::Line {
        return true;
    }
    // Quoting marks at a line start: "> name", "??? name".
    let mut j = i;
    while j > 0 && scan.kind(j - 1) == Some(Kind::Punct) && scan.gap(j) <= Gap::Space {
        j -= 1;
        if j == 0 || scan.gap(j) >= Gap::Line {
            return matches!(scan.toks[j].ch, b'>' | b'?' | b'-' | b'*');
        }
    }
    false
}

/// A name written in lower case at the start of a line (`naomi ryan`): a census first name
/// that is not a common word, then a surname or an unknown word.
fn lower_name(scan: &mut Scan<'_>, i: usize) -> usize {
    lower_at(scan, i, 0.6, false).unwrap_or(i + 1)
}

/// A name written in lower case at word token `i`: a census first name that is not a common
/// word, then (optionally an initial and) a surname or a word in no list; or, after a title
/// or a name label, any word that is not English (unless `names_only`: then only census
/// names). `base` is the score of a first name with a surname; context raises it. Returns
/// the token after the name.
pub(super) fn lower_at(
    scan: &mut Scan<'_>,
    i: usize,
    base: f32,
    names_only: bool,
) -> Option<usize> {
    let t = *scan.tok(i)?;
    if t.kind != Kind::Word || !t.is_lower() || t.len() < 2 {
        return None;
    }
    let fi = scan.info_full(i);
    if fi.has(dict::FUNCTION) {
        return None;
    }
    let strong = title_before(scan, i) || label_before(scan, i) || role_before(scan, i);
    // An English word is a first name here only before a surname (`john smith`, not `will
    // do`), and only in the recall setting, or after a title, label or role when both are
    // frequent names (`patient john smith`, not `pt will go`).
    // A frequent first name alone right after a relative (`son bill`, `niece ruby`).
    let kin_first = fi.has(dict::COMMON_FIRST) && kin_before(scan, i);
    if fi.has(dict::ENGLISH) && !kin_first {
        let pair = fi.has(dict::FIRST) && lower_surname_at(scan, i + 1);
        let frequent = fi.has(dict::COMMON_FIRST) && {
            let li = scan.info_full(i + 1);
            !li.has(dict::ENGLISH) || li.has(dict::COMMON_LAST)
        };
        if !(pair && (scan.recall || (strong && frequent))) {
            return None;
        }
    }
    let first = fi.has(dict::FIRST);
    // After a role in ordinary text (`wife zelda`), only a census name: the word after
    // `pt` is more often shorthand (`pt npo`) than a name.
    if names_only && !fi.has(dict::FIRST | dict::LAST) {
        return None;
    }
    if !(first || strong || fi.has(dict::LAST) && weak_role_before(scan, i)) {
        return None;
    }
    let mut k = i;
    let mut j = i + 1;
    if scan.gap(j) == Gap::Space
        && scan.kind(j) == Some(Kind::Word)
        && scan.toks[j].is_lower()
        && scan.toks[j].len() == 1
    {
        j += if scan.is_punct(j + 1, b'.') { 2 } else { 1 }; // a middle initial
    }
    if scan.gap(j) == Gap::Space && scan.kind(j) == Some(Kind::Word) && scan.toks[j].is_lower() {
        let li = scan.info_full(j);
        if scan.toks[j].len() > 1
            && !li.has(dict::FUNCTION)
            && (li.has(dict::LAST) || !li.has(dict::ENGLISH | dict::PROPER))
        {
            k = j;
        }
    }
    let score = match (first, k > i, strong) {
        (_, _, true) => 0.85,
        (true, true, false) => base.max(0.75),
        (true, false, false) => base,
        (false, _, false) => 0.55,
    };
    scan.emit(i, k, Category::Person, score);
    Some(k + 1)
}

/// Words for relatives, after which a frequent first name alone is that person.
const KIN: [u64; 24] = super::words8([
    "wife", "husband", "son", "daughter", "dtr", "dau", "mother", "father", "mom", "dad",
    "brother", "sister", "sis", "bro", "niece", "nephew", "aunt", "uncle", "cousin", "friend",
    "spouse", "partner", "hcp", "grandson",
]);

/// Whether the word right before token `i` (a space between) is a relative ([`KIN`]).
fn kin_before(scan: &Scan<'_>, i: usize) -> bool {
    i > 0
        && scan.gap(i) == Gap::Space
        && scan.kind(i - 1) == Some(Kind::Word)
        && KIN.contains(&super::word8(scan.bytes(i - 1)))
}

/// Whether token `j` is a lower-case surname from the lists, a space after the word before.
fn lower_surname_at(scan: &mut Scan<'_>, j: usize) -> bool {
    scan.gap(j) == Gap::Space
        && scan.kind(j) == Some(Kind::Word)
        && scan.toks[j].is_lower()
        && scan.toks[j].len() > 1
        && scan.info_full(j).has(dict::LAST)
}

/// Whether a capitalised word (token `t` of `text`) is no name whatever the lists say: a function
/// word ("The", "He"); a plural acronym (CEOs, MDs, IDs); an abbreviation written in mixed
/// case (MoCA, VASc, HbA; names with inner capitals start "Mc", "Mac", "De", "La": one
/// capital, then lower case, and end in lower case). Cheapest tests first.
fn not_a_name_word(info: WordInfo, text: &[u8], t: Tok) -> bool {
    if info.has(dict::FUNCTION) {
        return true;
    }
    let n = t.len();
    if n < 3 {
        return false;
    }
    let Some(b) = text.get(t.start..t.end) else {
        return false;
    };
    let all_upper = t.all_upper();
    let acronym_plural = b[n - 1] == b's' && b[..n - 1].iter().all(u8::is_ascii_uppercase);
    acronym_plural
        || (!all_upper
            && (b[1].is_ascii_uppercase() || b[n - 1].is_ascii_uppercase())
            && b.iter().filter(|c| c.is_ascii_uppercase()).count() >= 2)
}

/// Whether capitalised token `j` (`t`) of at most two letters, an apostrophe and a
/// capitalised word are glued together (`O'Neil`).
fn apostrophe_joins(scan: &Scan<'_>, j: usize, t: Tok) -> bool {
    t.len() <= 2
        && scan.is_apostrophe(j + 1)
        && scan.gap(j + 1) == Gap::None
        && scan.gap(j + 2) == Gap::None
        && scan.kind(j + 2) == Some(Kind::Word)
        && scan.toks[j + 2].is_cap()
}

/// Whether a hyphen and a capitalised word, not yet taken, are glued after token `to`
/// (`Evans-Bonilla`).
fn hyphen_joins(scan: &Scan<'_>, to: usize) -> bool {
    scan.is_punct(to + 1, b'-')
        && scan.gap(to + 1) == Gap::None
        && scan.gap(to + 2) == Gap::None
        && scan.kind(to + 2) == Some(Kind::Word)
        && scan.toks[to + 2].is_cap()
        && !scan.is_used(to + 2)
}

/// Builds the run of name-like tokens from `i`, scores its pieces, emits; returns the next
/// token to look at.
/// Where a name run goes on after a part ending at token `to`: the token after a space, or
/// after a title's dot and its space ("Dr. Smith"); `None` where the run ends.
#[inline]
fn next_part(scan: &Scan<'_>, to: usize, info: WordInfo) -> Option<usize> {
    let nx = to + 1;
    let dot_after_title = scan.is_punct(nx, b'.')
        && scan.gap(nx) == Gap::None
        && info.has(dict::TITLE)
        && scan.gap(nx + 1) == Gap::Space;
    if dot_after_title {
        return Some(nx + 1);
    }
    (scan.gap(nx) == Gap::Space).then_some(nx)
}

fn chain(scan: &mut Scan<'_>, i: usize) -> usize {
    // A place word ("FROM", "At") is no name and starts no run: what follows is looked at
    // as a place first.
    if super::places::is_cue(scan, i) {
        return i + 1;
    }
    let mut parts = Parts::new();
    chain_in(scan, i, &mut parts)
}

/// [`chain`], building the run in `parts` (empty).
fn chain_in(scan: &mut Scan<'_>, i: usize, parts: &mut Parts) -> usize {
    let mut j = i;
    while let Some(&t) = scan.tok(j) {
        if t.kind != Kind::Word || scan.is_used(j) {
            break;
        }
        // A lower-case word goes on a run only as a particle (`van`), or as the first piece
        // of a hyphenated one: most are ruled out here without a lookup.
        if !t.is_cap() && !hyphen_joins(scan, j) && !scan.dict.may_be_particle(scan.bytes(j)) {
            break;
        }
        // A place word ends a run ("TRANSFERRED FROM GLENCOE HOSPITAL"): what follows it is
        // looked at as a place first.
        if j > i && super::places::is_cue(scan, j) {
            break;
        }
        // Function words ("The", "He") are in the small table: no need for the big one.
        let small = scan.info_small(j);
        // Address words end a run: "Dr. Cindy Holinka Apt. 117" leaves "Apt. 117" to the
        // address family.
        if j > i
            && t.len() > 1
            && (small.has(dict::UNIT | dict::STREET_PREFIX)
                || small.month() != 0
                || super::numbers::value_start_word(scan, j))
        {
            break;
        }
        let mut to = j;
        if !t.is_cap() {
            // Only a particle joins, and only between capitalised words.
            // Hyphenated: van-Dyke.
            while hyphen_joins(scan, to) {
                to += 2;
            }
            // (For a word that is not capitalised, `info` is the small-table facts.)
            let info = if to == j { small } else { scan.info(to) };
            if !info.has(dict::PARTICLE) {
                break;
            }
            let nx = to + 1;
            let joins = parts.len > 0
                && scan.gap(nx) == Gap::Space
                && scan.kind(nx) == Some(Kind::Word)
                && scan.toks[nx].is_title();
            if !joins {
                break;
            }
            let full = parts.push(Part {
                from: j,
                to,
                class: Class::Initial, // neutral filler inside a name
                info,
            });
            if full {
                break;
            }
            match next_part(scan, to, info) {
                Some(next) => j = next,
                None => break,
            }
            continue;
        }
        // O'Neil, D'Angelo: one part.
        if apostrophe_joins(scan, j, t) {
            to = j + 2;
        }
        // Hyphenated: Evans-Bonilla.
        while hyphen_joins(scan, to) {
            to += 2;
        }
        // Acronyms of up to three letters are never names ("MRN", "BP"): no big lookup.
        let acronym = t.all_upper() && t.len() <= 3 && to == j;
        let info = if (small.has(dict::FUNCTION) || acronym) && to == j {
            small
        } else if to == j {
            scan.info(j)
        } else {
            // Classify a compound by its last piece.
            scan.info(to)
        };
        let class = if not_a_name_word(info, scan.text.as_bytes(), t) {
            Class::NonName
        } else {
            // A compound (O'NEIL, Evans-Bonilla) is as long as all its pieces.
            let len = scan.end(to) - scan.start(j);
            let upper =
                (j..=to).all(|k| scan.toks[k].kind != Kind::Word || scan.toks[k].all_upper());
            classify(info, upper && len > 1, len)
        };
        let mut end = to;
        if class == Class::Initial && scan.is_punct(to + 1, b'.') && scan.gap(to + 1) == Gap::None {
            end = to + 1;
        }
        let full = parts.push(Part {
            from: j,
            to: end,
            class,
            info,
        });
        to = end;
        if full {
            break;
        }
        match next_part(scan, to, info) {
            Some(next) => j = next,
            None => break,
        }
    }
    let parts = parts.as_mut_slice();
    let Some(&last) = parts.last() else {
        return i + 1;
    };
    if parts.len() == 1
        && matches!(last.class, Class::Last | Class::Ambig)
        && let Some(next) = surname_comma_first(scan, i, last)
    {
        return next;
    }
    let next = last.to + 1;
    let nparts = parts.len();
    // Most capitalised words are ordinary words at a sentence start: nothing to do unless a
    // title makes the next word a name.
    // (A role word before another word may make that word a name: see
    // [`name_after_role`].)
    let all_ordinary = parts
        .iter()
        .all(|p| p.class == Class::NonName && !p.info.has(dict::TITLE))
        && !parts[..nparts - 1].iter().any(|p| p.info.has(dict::ROLE));
    if all_ordinary && (nparts > 1 || !title_before(scan, i)) {
        return next;
    }
    // Titles and role words at the front are context, not name.
    let mut title = title_before(scan, i);
    let mut role = false;
    let mut first = 0;
    while first < parts.len() {
        let p = parts[first];
        if p.info.has(dict::TITLE) && p.class != Class::First {
            title = true;
            first += 1;
            break; // the word after a title is the name
        } else if p.class == Class::NonName
            && first > 0
            && name_after_role(scan, parts[first - 1], p)
        {
            // "WIFE COY", "NP IRA", "husband Vesa": after a relative or a clinician, a
            // word read as an acronym, a common word or a drug is the person's name.
            parts[first].class = Class::Ambig;
            break;
        } else if p.class == Class::NonName {
            if p.info.has(dict::ROLE) {
                role = true;
            }
        } else if role_word_before_name(parts, first) {
            // "Call John Smith", "Husband Alister": a verb that asks for a person or a
            // relative, also a surname, before a name.
            role = true;
        } else {
            break;
        }
        first += 1;
    }
    // After a title the next word is a name even if it is also something else (Dr. Wilms,
    // Dr. Brown).
    if title && first < parts.len() && parts[first].class == Class::NonName {
        let p = &mut parts[first];
        if !p.info.has(dict::TITLE) && scan.toks[p.from].is_cap() {
            p.class = Class::Ambig;
        }
    }
    let core = &parts[first..];
    // An organisation's name ("Mercy General Hospital", "Jones Group") is not a person.
    if core
        .iter()
        .any(|p| p.info.has(dict::ORG) && p.class == Class::NonName)
    {
        return next;
    }
    // Split at ordinary words; the first piece keeps the context before the run.
    let mut seg_start = 0;
    let mut first_seg = true;
    // (An exclusive range: the inclusive one's iterator costs more on this path.)
    for k in 0..core.len() + 1 {
        let boundary = k == core.len() || core[k].class == Class::NonName;
        if !boundary {
            continue;
        }
        let seg = &core[seg_start..k];
        // A piece of initials alone ("I" at a sentence start, a stray "J.") scores nothing,
        // unless a title or a clinician's credential stands right before it ("Dr. B.",
        // "RN A.": how notes name staff).
        if seg.iter().any(|p| p.class != Class::Initial) {
            let ctx_before = if first_seg {
                Context {
                    title,
                    role: role || role_before(scan, seg[0].from),
                    label: label_before(scan, seg[0].from),
                    first_seg: first == 0 || role || title,
                }
            } else {
                // Later in a run (text in capitals runs on: "SISTER ANN AND NIECE JO"), a
                // role word just before the piece is still its context.
                let before = k.checked_sub(seg.len() + 1).and_then(|b| core.get(b));
                Context {
                    title: false,
                    role: before.is_some_and(|p| p.info.has(dict::ROLE)),
                    label: false,
                    first_seg: false,
                }
            };
            score_segment(scan, seg, ctx_before);
        } else if let (Some(a), Some(b)) = (seg.first(), seg.last())
            && scan.toks[a.from].is_cap()
            && clinician_before(scan, a.from)
        {
            scan.emit(a.from, b.to, Category::Person, 0.8);
        }
        first_seg = false;
        seg_start = k + 1;
    }
    next
}

/// Whether part `p`, read as no name, is a name after part `role`: `role` is a role word
/// other than `pt`/`patient`, and `p` is a census first name that is frequent or no English
/// word (`COY`, `MARK`, `IRA`), or a surname or drug name that is no English word (`Vesa`).
fn name_after_role(scan: &mut Scan<'_>, role: Part, p: Part) -> bool {
    if !role.info.has(dict::ROLE)
        || scan.is(role.from, "pt")
        || scan.is(role.from, "pts")
        || scan.is(role.from, "patient")
    {
        return false;
    }
    // Everything about the word (a short word in capitals was looked up in the context
    // lists only).
    let i = if p.from == p.to {
        scan.info_full(p.from)
    } else {
        p.info
    };
    !i.has(
        dict::FUNCTION
            | dict::TITLE
            | dict::CREDENTIAL
            | dict::ROLE
            | dict::MONTH
            | dict::WEEKDAY
            | dict::STATE
            | dict::COUNTRY,
    ) && i.ctx_code() == 0
        && ((i.has(dict::FIRST) && (i.has(dict::COMMON_FIRST) || !i.has(dict::ENGLISH)))
            || (!i.has(dict::ENGLISH) && i.has(dict::LAST | dict::CLINICAL)))
}

/// Whether part `k` is a role word that is also a surname and a common word (`Call`,
/// `Husband`, `Son`), followed in the run by a name: the word asks for or names the
/// person's relation, it is not the person's name.
fn role_word_before_name(parts: &[Part], k: usize) -> bool {
    let (Some(p), Some(next)) = (parts.get(k), parts.get(k + 1)) else {
        return false;
    };
    p.class == Class::Ambig
        && p.info.has(dict::ROLE)
        && p.info.has(dict::ENGLISH)
        && !p.info.has(dict::FIRST)
        && matches!(
            next.class,
            Class::First | Class::Last | Class::Ambig | Class::Unknown | Class::Proper
        )
}

/// "Smith, John" (a surname, a comma, a first name, and the name ends there): one person
/// written surname first, as records list people. Token `i` starts the run, a single
/// capitalised word; returns the token after the first name when it took the pair.
fn surname_comma_first(scan: &mut Scan<'_>, i: usize, last: Part) -> Option<usize> {
    let comma = last.to + 1;
    let f = comma + 1;
    if last.from != i
        || !scan.is_punct(comma, b',')
        || scan.gap(comma) != Gap::None
        || scan.gap(f) != Gap::Space
        || scan.kind(f) != Some(Kind::Word)
        || !scan.toks[f].is_cap()
        || scan.toks[f].len() < 2
        || scan.is_used(f)
    {
        return None;
    }
    // Not an item of a list ("Paris, London, Rome"; "Miller, Jones, Smith").
    if i > 0 && scan.is_punct(i - 1, b',') {
        return None;
    }
    let after = f + 1;
    let ends = scan.gap(after) >= Gap::Line
        || scan.kind(after).is_none()
        || (scan.kind(after) == Some(Kind::Punct) && !scan.is_punct(after, b','))
        || (scan.kind(after) == Some(Kind::Word) && scan.toks[after].is_lower());
    if !ends {
        return None;
    }
    let fi = scan.info(f);
    let place = dict::STATE | dict::COUNTRY | dict::CITY | dict::MONTH | dict::WEEKDAY;
    if !last.info.has(dict::LAST)
        || !fi.has(dict::FIRST)
        || fi.has(place | dict::FUNCTION | dict::TITLE)
        || last.info.has(place | dict::FUNCTION | dict::TITLE)
    {
        return None;
    }
    // Both also common words ("Brown, Rose"): only a frequent surname and first name.
    let ambiguous = last.info.has(dict::ENGLISH) || fi.has(dict::ENGLISH);
    let score = if !ambiguous {
        0.85
    } else if last.info.has(dict::COMMON_LAST) && fi.has(dict::COMMON_FIRST) {
        0.7
    } else {
        return None;
    };
    scan.emit(i, f, Category::Person, score);
    Some(f + 1)
}

#[derive(Clone, Copy)]
struct Context {
    title: bool,
    role: bool,
    label: bool,
    /// No capitalised ordinary word before it in the same run ("Entertainment Weekly").
    first_seg: bool,
}

fn score_segment(scan: &mut Scan<'_>, seg: &[Part], ctx: Context) {
    // Trim initials and particles at the ends: "J." alone is not a name, "Smith J" is.
    let mut a = 0;
    let mut b = seg.len();
    while b > a && seg[b - 1].class == Class::Initial && !scan.toks[seg[b - 1].from].is_cap() {
        b -= 1;
    }
    while a < b && seg[a].class == Class::Initial && !scan.toks[seg[a].from].is_cap() {
        a += 1;
    }
    let seg = &seg[a..b];
    if seg.is_empty() {
        return;
    }
    // How many parts of each class, in one pass over the piece.
    let mut by_class = [0usize; CLASSES];
    for p in seg {
        if let Some(n) = by_class.get_mut(p.class as usize) {
            *n += 1;
        }
    }
    let count = |c: Class| by_class.get(c as usize).copied().unwrap_or(0);
    let (first, last, ambig, initial) = (
        count(Class::First),
        count(Class::Last),
        count(Class::Ambig),
        count(Class::Initial),
    );
    let words = seg.len() - initial;
    if words == 0 {
        return;
    }
    let head = seg[0];
    let tail = seg[seg.len() - 1];
    let start_tok = head.from;
    let sentence_start = scan.sentence_start(start_tok);
    let after = after_context(scan, tail.to);
    let mut score: f32 = if words >= 2 {
        let head_first = head.info.has(dict::FIRST) && head.class != Class::Unknown;
        let tail_last =
            tail.info.has(dict::LAST) || matches!(tail.class, Class::Unknown | Class::Proper);
        let proper = count(Class::Proper);
        if proper + ambig == words && proper > 0 {
            // Only proper nouns and common words: a place or a brand more often than a person.
            0.45
        } else if ambig == words {
            // Both words also common words: only a frequent first name and a frequent
            // surname together ("Rose Brown") are likely a person.
            let common_first = head.info.has(dict::COMMON_FIRST);
            let common_last = tail.info.has(dict::COMMON_LAST);
            if common_first && common_last {
                0.6
            } else {
                0.4
            }
        } else if head_first && tail_last {
            0.9
        } else if first + last > 0 {
            0.85
        } else {
            0.75
        }
    } else {
        let single = seg
            .iter()
            .find(|p| p.class != Class::Initial)
            .map(|p| p.class);
        match single {
            Some(Class::First) => {
                if sentence_start {
                    0.7
                } else {
                    0.75
                }
            }
            Some(Class::Last) => {
                if sentence_start {
                    0.5
                } else {
                    0.65
                }
            }
            Some(Class::Unknown) => {
                let upper = scan.toks[start_tok].all_upper();
                let place = seg[0].info.has(dict::CITY);
                if upper {
                    0.3
                } else if sentence_start || place {
                    0.4
                } else {
                    0.55
                }
            }
            _ => 0.3,
        }
    };
    let single_weak = words == 1 && matches!(seg[0].class, Class::Unknown | Class::Last);
    // A clinical word that is also a name ("Will", "Given", "Foley") after "Pt" opens a
    // telegraphic sentence ("Pt Will need…", "Pt Given ativan"); after another role it is
    // a name ("wife Will").
    let clinical_after_pt = words == 1
        && seg[0].class == Class::Ambig
        && seg[0].info.has(dict::CLINICAL)
        && patient_word_before(scan, start_tok);
    if ctx.title || ctx.label || after.credential {
        score = score.max(0.95);
    } else if ctx.role && !clinical_after_pt {
        score = score.max(0.85);
    } else {
        if weak_role_before(scan, start_tok) && (single_weak || seg[0].class == Class::First) {
            score += 0.1;
        }
        let place = seg[0]
            .info
            .has(dict::COUNTRY | dict::STATE | dict::MONTH | dict::WEEKDAY);
        if after.verb {
            score = if words == 1 && seg[0].class == Class::Ambig {
                if ctx.first_seg && !sentence_start && !place {
                    score.max(0.55)
                } else {
                    score
                }
            } else {
                score + 0.1
            };
        }
        if after.possessive && words == 1 {
            score += 0.1;
        }
        // (Not for a word in capitals that is in no list: in a note written in capitals
        // every "NO ECTOPY." and ", BASELINE BEDBOUND." would be one.)
        let shouted = scan.toks[start_tok].all_upper() && seg[0].class == Class::Proper;
        if words == 1 && seg[0].class != Class::Ambig && !shouted {
            // A vocative ("Kuba, can I…", "…, Mark!") or a speaker label at a line start
            // ("Ubul: What a wife.").
            if (sentence_start && after.comma)
                || after.vocative_end
                || after.speaker && line_start(scan, start_tok)
            {
                score = score.max(0.6);
            }
        }
        // Coordinated with a name just before: "Marrero and Murphy", "Hannah, Anthony".
        let ambiguous = words == 1 && matches!(seg[0].class, Class::Ambig | Class::Proper);
        if coordinated_with_person(scan, start_tok, ambiguous) {
            score = score.max(0.6);
        } else if words == 1 && !sentence_start {
            // Two weak candidates joined ("Usamov and Bowers", "Muslija and Brown"): a pair
            // of names, unless both are common words ("Brown and White").
            let namey = matches!(seg[0].class, Class::Unknown | Class::Last | Class::First)
                || seg[0].info.has(dict::LAST | dict::FIRST);
            if namey && let Some(prev) = coordinated_candidate(scan, start_tok) {
                let prev_text = scan.text.get(prev.start..prev.end).unwrap_or("");
                let prev_common = prev_text.split_whitespace().count() == 1 && {
                    let lower = prev_text.to_lowercase();
                    scan.dict.get(&lower).has(dict::ENGLISH)
                };
                if !(prev_common && seg[0].class == Class::Ambig) {
                    score = score.max(0.6);
                    if let Some(last) = scan.out.last_mut() {
                        last.score = last.score.max(0.6);
                    }
                }
            }
        }
    }
    // An eponym ("Osler nodes", "Horner syndrome") or a drug with its dose ("Toujeo 20
    // units") is not a person, whatever the word.
    let no_census_name = first + last == 0;
    if (words == 1 || no_census_name)
        && !ctx.title
        && !ctx.label
        && (eponym_or_dose_after(scan, tail.to) || drug_before(scan, start_tok))
    {
        // Not even a weak candidate: nothing to pair with either.
        score = 0.0;
    }
    if score >= 0.3 {
        let mut end_tok = tail.to;
        // "PATIENT NAME: SMITH, JOHN": a label's name may be written surname first.
        if ctx.label
            && scan.is_punct(end_tok + 1, b',')
            && scan.kind(end_tok + 2) == Some(Kind::Word)
            && scan.toks[end_tok + 2].is_cap()
            && scan.gap(end_tok + 2) == Gap::Space
        {
            end_tok += 2;
        }
        scan.emit(start_tok, end_tok, Category::Person, score.min(0.99));
    }
}

/// A medication verb right before, possibly with "with", "on" or "of" between ("treated
/// with Nurtec", "improved on Trintellix", "started Toujeo", "a trial of Vraylar").
fn drug_before(scan: &mut Scan<'_>, i: usize) -> bool {
    let mut p = i;
    for _ in 0..2 {
        if p == 0 || scan.gap(p) > Gap::Space || scan.kind(p - 1) != Some(Kind::Word) {
            return false;
        }
        p -= 1;
        if scan.info_small(p).has(dict::DRUG_BEFORE) {
            return true;
        }
        let w = scan.s(p);
        if !["with", "on", "of", "to"]
            .iter()
            .any(|d| w.eq_ignore_ascii_case(d))
        {
            return false;
        }
    }
    false
}

/// Whether the nearest word before token `i` (see [`word_before`]) is `pt`, `pts` or
/// `patient`.
fn patient_word_before(scan: &Scan<'_>, i: usize) -> bool {
    word_before(scan, i)
        .is_some_and(|p| scan.is(p, "pt") || scan.is(p, "pts") || scan.is(p, "patient"))
}

/// A title or a clinician's credential right before token `i`, across a title's dot
/// (`Dr. B.`, `RN A.`, `NP K.`).
fn clinician_before(scan: &mut Scan<'_>, i: usize) -> bool {
    let Some(mut p) = i.checked_sub(1) else {
        return false;
    };
    if scan.gap(i) > Gap::Space {
        return false;
    }
    if scan.is_punct(p, b'.') && scan.gap(p) == Gap::None {
        let Some(q) = p.checked_sub(1) else {
            return false;
        };
        p = q;
    }
    scan.kind(p) == Some(Kind::Word)
        && scan.toks[p].is_cap()
        && scan.info_small(p).has(dict::TITLE | dict::CREDENTIAL)
}

/// The nearest word token shortly before token `i` on the same line, across a comma, colon,
/// apostrophe or bracket (at most three tokens back).
fn word_before(scan: &Scan<'_>, i: usize) -> Option<usize> {
    let mut p = i;
    for _ in 0..3 {
        if p == 0 || scan.gap(p) >= Gap::Line {
            return None;
        }
        p -= 1;
        match scan.kind(p) {
            Some(Kind::Word) => return Some(p),
            Some(Kind::Punct) if matches!(scan.toks[p].ch, b',' | b':' | b'\'' | b'(') => {}
            _ => return None,
        }
    }
    None
}

/// A title right before token `i`: `Dr.`, `Mrs`, `Prof.` (or `mr.` in lower-case text).
fn title_before(scan: &mut Scan<'_>, i: usize) -> bool {
    if i == 0 || scan.gap(i) > Gap::Space {
        return false;
    }
    let mut p = i - 1;
    let dotted = scan.is_punct(p, b'.') && p > 0;
    if dotted {
        p -= 1;
    }
    scan.kind(p) == Some(Kind::Word)
        && (scan.toks[p].is_cap() || dotted)
        && scan.info_small(p).has(dict::TITLE)
}

/// A role or kinship word shortly before (`wife`, `patient`, `seen by`, `Hi`), across a
/// comma or colon.
fn role_before(scan: &mut Scan<'_>, i: usize) -> bool {
    word_before(scan, i).is_some_and(|p| scan.info_small(p).has(dict::ROLE))
}

/// `Name: X`, `Patient: X`, `my name is X`, `I'm X`, `calls me X`.
fn label_before(scan: &mut Scan<'_>, i: usize) -> bool {
    if i == 0 {
        return false;
    }
    let p = i - 1;
    if scan.is_punct(p, b':') && p > 0 && scan.gap(i) <= Gap::Line {
        let w = p - 1;
        return scan.kind(w) == Some(Kind::Word) && scan.info_small(w).has(dict::ROLE);
    }
    if scan.is_punct(p, b'?') && p > 0 && scan.is(p - 1, "name") {
        return true;
    }
    if p > 0
        && (scan.is(p, "him") || scan.is(p, "her") || scan.is(p, "them"))
        && (scan.is(p - 1, "named") || scan.is(p - 1, "call") || scan.is(p - 1, "called"))
    {
        return true;
    }
    if scan.gap(i) > Gap::Space {
        return false;
    }
    if scan.is(p, "is") && p > 0 && scan.is(p - 1, "name") {
        return true;
    }
    if scan.is(p, "m") && p > 1 && scan.is_punct(p - 1, b'\'') && scan.is(p - 2, "i") {
        return true;
    }
    scan.is(p, "me") && p > 0 && (scan.is(p - 1, "calls") || scan.is(p - 1, "call"))
}

/// The first token of the capitalised run that ends at `last` (for the vocative test).
fn first_of_name(scan: &Scan<'_>, last: usize) -> usize {
    let mut f = last;
    while f > 0
        && scan.gap(f) == Gap::Space
        && scan.kind(f - 1) == Some(Kind::Word)
        && scan.toks[f - 1].is_cap()
    {
        f -= 1;
    }
    f
}

/// The person candidate (any score from 0.3) that ends just before `i`, joined by `and`,
/// `or`, `&` or a comma.
fn coordinated_candidate(scan: &Scan<'_>, i: usize) -> Option<super::Cand> {
    if i < 2 {
        return None;
    }
    let j = i - 1;
    let joined =
        scan.is_punct(j, b',') || scan.is_punct(j, b'&') || scan.is(j, "and") || scan.is(j, "or");
    if !joined {
        return None;
    }
    let prev_end = scan.end(j - 1);
    scan.out
        .last()
        .filter(|c| c.cat == Category::Person && c.end == prev_end && c.score >= 0.3)
        .copied()
}

/// Whether a person candidate ends just before `i`, joined by `and`, `or`, `&` or a comma
/// (any score when `strong` is false; 0.7 or more when it is true).
fn coordinated_with_person(scan: &Scan<'_>, i: usize, strong: bool) -> bool {
    if i < 2 {
        return false;
    }
    let j = i - 1;
    let joined =
        scan.is_punct(j, b',') || scan.is_punct(j, b'&') || scan.is(j, "and") || scan.is(j, "or");
    if !joined {
        return false;
    }
    let prev_end = scan.end(j - 1);
    scan.out.last().is_some_and(|c| {
        c.cat == Category::Person && c.end == prev_end && c.score >= if strong { 0.7 } else { 0.5 }
    })
}

fn weak_role_before(scan: &mut Scan<'_>, i: usize) -> bool {
    if i == 0 || scan.gap(i) > Gap::Space {
        return false;
    }
    let p = i - 1;
    scan.kind(p) == Some(Kind::Word)
        && (scan.info_small(p).has(dict::WEAK_ROLE) || scan.info_small(p).has(dict::ROLE))
}

struct After {
    credential: bool,
    verb: bool,
    possessive: bool,
    /// A comma right after.
    comma: bool,
    /// `, X!`, `, X?`, `, X.`: a name addressed at the end of a sentence.
    vocative_end: bool,
    /// A colon right after: `Name: text`.
    speaker: bool,
}

/// An eponym's head noun after the name ending at token `last` (possessive allowed:
/// `Osler nodes`), or a dose (`Toujeo 20 units`). Asked only where the answer decides
/// something: its lookups are of the context lists, which change nothing a later lookup
/// reads.
fn eponym_or_dose_after(scan: &mut Scan<'_>, last: usize) -> bool {
    let n = last + 1;
    let head = if scan.is_apostrophe(n) && scan.is(n + 1, "s") {
        n + 2
    } else {
        n
    };
    if scan.kind(head) == Some(Kind::Word)
        && scan.gap(head) <= Gap::Space
        && scan.info_small(head).has(dict::EPONYM_HEAD)
    {
        return true;
    }
    if scan.kind(n) == Some(Kind::Num) && scan.gap(n) == Gap::Space {
        scan.info_small(n + 1).has(dict::DRUG_AFTER)
    } else if scan.kind(n) == Some(Kind::Word) && scan.gap(n) == Gap::Space {
        scan.info_small(n).has(dict::DRUG_AFTER)
    } else {
        false
    }
}

fn after_context(scan: &mut Scan<'_>, last: usize) -> After {
    let mut a = After {
        credential: false,
        verb: false,
        possessive: false,
        comma: false,
        vocative_end: false,
        speaker: false,
    };
    let n = last + 1;
    a.comma = scan.is_punct(n, b',') && scan.gap(n) == Gap::None;
    a.speaker = scan.is_punct(n, b':') && scan.gap(n) == Gap::None;
    a.vocative_end = (scan.is_punct(n, b'!') || scan.is_punct(n, b'?') || scan.is_punct(n, b'.'))
        && scan.gap(n) == Gap::None
        && scan.gap(n + 1) != Gap::None
        && scan.is_punct(first_of_name(scan, last).wrapping_sub(1), b',');
    if scan.is_apostrophe(n)
        && scan.gap(n) == Gap::None
        && scan.is(n + 1, "s")
        && scan.gap(n + 1) == Gap::None
    {
        a.possessive = true;
        return a;
    }
    let mut c = n;
    if scan.is_punct(c, b',') {
        c += 1;
    }
    if scan.kind(c) == Some(Kind::Word) && scan.gap(c) <= Gap::Space {
        let t = scan.toks[c];
        let info = scan.info_small(c);
        if info.has(dict::CREDENTIAL) && (t.all_upper() || t.is_cap()) && scan.s(c).len() >= 2 {
            // "PT" and "DC" are also common abbreviations: only after a comma.
            a.credential = c > n || !matches!(scan.s(c), "PT" | "DC" | "OD" | "DO" | "PA");
        }
    }
    if scan.kind(n) == Some(Kind::Word) && scan.gap(n) == Gap::Space && scan.toks[n].is_lower() {
        a.verb = scan.info_small(n).has(dict::PERSON_VERB);
    }
    a
}
