//! The one pass over the input bytes: splits text into words, numbers, mixed letter-digit runs
//! and single punctuation marks, remembering what whitespace came before each. Every detector
//! works on these tokens, so the bytes are classified once, not once per pattern.
//!
//! Offsets are byte offsets into the UTF-8 input and always fall on character boundaries:
//! the lexer only ever advances by whole characters.

use crate::dict::WordInfo;

/// What a token is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Letters only (any script).
    Word,
    /// ASCII digits only.
    Num,
    /// Letters and ASCII digits mixed (`1HGCM82633A004352`, `3rd`, `B0J`).
    AlNum,
    /// One ASCII punctuation or symbol character.
    Punct,
    /// One non-ASCII character that is neither a letter nor whitespace (`–`, `’`, `€`).
    Other,
}

/// The whitespace before a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Gap {
    /// The token touches the one before it.
    None,
    /// Spaces or tabs, no line break.
    Space,
    /// Exactly one line break (and maybe spaces).
    Line,
    /// Two or more line breaks: a paragraph boundary.
    Para,
}

/// First character is upper case.
pub(crate) const UPPER_FIRST: u8 = 1;
/// Every letter is upper case (and there is at least one).
pub(crate) const ALL_UPPER: u8 = 2;
/// At least one lower-case letter.
pub(crate) const HAS_LOWER: u8 = 4;
/// Contains a non-ASCII character.
pub(crate) const NON_ASCII: u8 = 8;
/// At least one ASCII digit.
pub(crate) const HAS_DIGIT: u8 = 16;
/// Inside a candidate of a detector family (never set by the lexer): later families skip
/// the token. Kept in the token, which every step reads anyway, rather than in a vector of
/// its own that would have to be set up for every message.
pub(crate) const USED: u8 = 32;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Tok {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub gap: Gap,
    /// Letter-case flags (`UPPER_FIRST` …) for words and mixed runs, and [`USED`].
    pub flags: u8,
    /// The character, for `Punct`.
    pub ch: u8,
    /// How many tokens back the last `Num` token is (0 for a `Num` itself), `u32::MAX` if
    /// there is none (or it is further back than that).
    pub num_back: u32,
    /// Dictionary facts about the token, looked up lazily by the scan (the lexer leaves
    /// them empty, [`WordInfo::level`] 0). Kept in the token, which every step reads
    /// anyway, rather than in a vector of their own set up for every message.
    pub info: WordInfo,
}

impl Tok {
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == Kind::Punct && self.ch == c
    }
    pub fn is_cap(&self) -> bool {
        self.flags & UPPER_FIRST != 0
    }
    pub fn all_upper(&self) -> bool {
        self.flags & ALL_UPPER != 0
    }
    pub fn is_lower(&self) -> bool {
        self.flags & (UPPER_FIRST | ALL_UPPER) == 0
    }
    /// Starts with a capital and has lower-case letters: `Smith`, `McDonald`, `Željko`.
    pub fn is_title(&self) -> bool {
        self.flags & (UPPER_FIRST | HAS_LOWER) == UPPER_FIRST | HAS_LOWER
    }
}

// Byte classes, one table load per byte. The first three double as the letter-case
// summary of an ASCII run (`seen` below), so a run's kind and flags come from one more table.
/// An ASCII digit.
const B_DIGIT: u8 = 1;
/// An ASCII upper-case letter.
const B_UPPER: u8 = 2;
/// An ASCII lower-case letter.
const B_LOWER: u8 = 4;
/// Any of the three: the byte continues a letter-digit run.
const B_RUN: u8 = B_DIGIT | B_UPPER | B_LOWER;
/// Spaces, tabs, carriage returns and other control characters: they separate tokens.
const B_SPACE: u8 = 8;
/// A line feed.
const B_NEWLINE: u8 = 16;
/// ASCII punctuation or a symbol: a token of its own.
const B_PUNCT: u8 = 32;
/// A byte of a non-ASCII character (decoded on the slow path).
const B_HIGH: u8 = 64;

const fn byte_table() -> [u8; 256] {
    let mut t = [B_HIGH; 256];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_digit() {
            B_DIGIT
        } else if b.is_ascii_uppercase() {
            B_UPPER
        } else if b.is_ascii_lowercase() {
            B_LOWER
        } else if b == b'\n' {
            B_NEWLINE
        } else if b <= b' ' || b == 0x7f {
            // The space, and control characters, which separate tokens like spaces do.
            B_SPACE
        } else {
            B_PUNCT
        };
        c += 1;
    }
    t
}

static BYTE: [u8; 256] = byte_table();

/// Kind and flags (without `UPPER_FIRST`) of a run of ASCII letters and digits, by the
/// union of its bytes' classes (`B_DIGIT | B_UPPER | B_LOWER`).
const fn run_summary_table() -> [(Kind, u8); 8] {
    let mut t = [(Kind::Num, 0u8); 8];
    let mut seen = 0;
    while seen < 8 {
        let digit = seen as u8 & B_DIGIT != 0;
        let upper = seen as u8 & B_UPPER != 0;
        let lower = seen as u8 & B_LOWER != 0;
        let kind = if !upper && !lower {
            Kind::Num
        } else if !digit {
            Kind::Word
        } else {
            Kind::AlNum
        };
        let mut flags = 0;
        if upper && !lower {
            flags |= ALL_UPPER;
        }
        if lower {
            flags |= HAS_LOWER;
        }
        if digit {
            flags |= HAS_DIGIT;
        }
        t[seen] = (kind, flags);
        seen += 1;
    }
    t
}

static RUN_SUMMARY: [(Kind, u8); 8] = run_summary_table();

/// Combining marks (U+0300–U+036F) continue a word: decomposed `é` is `e` + U+0301.
fn is_word_char(c: char) -> bool {
    is_alpha(c) || ('\u{300}'..='\u{36f}').contains(&c)
}

// Letter case of a character. Latin-1 (the accented letters of most European names) is
// decided by range, which gives the Unicode answer without a search through its tables
// (the tests compare every Latin-1 character); the rest up to U+20FF (more of Latin, Greek,
// Cyrillic, Hebrew, general punctuation) is read from a table filled from the Unicode tables
// once; the rest asks them.

/// Bits of [`WIDE`].
const C_ALPHA: u8 = 1;
const C_UPPER: u8 = 2;
const C_LOWER: u8 = 4;

/// Letter facts (`C_ALPHA`, `C_UPPER`, `C_LOWER`) about the characters from `first`, from
/// the standard library's Unicode tables.
fn facts_table<const N: usize>(first: u32) -> [u8; N] {
    let mut t = [0u8; N];
    for (k, bits) in t.iter_mut().enumerate() {
        if let Some(c) = char::from_u32(first + k as u32) {
            *bits = std_facts(c);
        }
    }
    t
}

/// Letter facts about `c` from the standard library's Unicode tables (a search each).
fn std_facts(c: char) -> u8 {
    let mut f = 0;
    for (yes, bit) in [
        (c.is_alphabetic(), C_ALPHA),
        (c.is_uppercase(), C_UPPER),
        (c.is_lowercase(), C_LOWER),
    ] {
        if yes {
            f |= bit;
        }
    }
    f
}

/// Letter facts about U+0100–U+20FF: the rest of Latin, IPA, Greek, Cyrillic, Hebrew,
/// Arabic and the other scripts up to general punctuation, super- and subscripts and
/// currency signs (dashes, curly quotes and the euro sign are common in text, and a search
/// of the Unicode tables for each cost more than the rest of its token). Built on first use
/// (8 KiB).
static WIDE: std::sync::LazyLock<[u8; 0x2000]> = std::sync::LazyLock::new(|| facts_table(0x100));

/// Letter facts about `c` (from U+0100), from the table or the standard library's.
#[inline]
fn wide_table_facts(c: char) -> u8 {
    match WIDE.get((c as usize).wrapping_sub(0x100)) {
        Some(&bits) => bits,
        None => std_facts(c),
    }
}

/// Whether `c` (from U+0100) has the facts `bit`. Out of line: it is rare, and the hot
/// loops that test for it stay small.
#[inline(never)]
fn wide_has(c: char, bit: u8) -> bool {
    wide_table_facts(c) & bit != 0
}

/// Whether `c` is a letter, upper case, lower case (`C_ALPHA`, `C_UPPER`, `C_LOWER`), as
/// [`is_alpha`], [`is_upper`] and [`is_lower`] say, for one table read where they would
/// make one each.
#[inline]
fn char_facts(c: char) -> u8 {
    if c <= '\u{ff}' {
        let (upper, lower) = (is_upper(c), is_lower(c));
        let mut f = 0;
        if upper || lower {
            f |= C_ALPHA;
        }
        if upper {
            f |= C_UPPER;
        }
        if lower {
            f |= C_LOWER;
        }
        f
    } else {
        wide_facts(c)
    }
}

/// [`char_facts`] from U+0100. Out of line, like [`wide_has`].
#[inline(never)]
fn wide_facts(c: char) -> u8 {
    wide_table_facts(c)
}

/// `c.is_uppercase()`.
#[inline]
pub(crate) fn is_upper(c: char) -> bool {
    match c {
        'A'..='Z' | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{de}' => true,
        '\0'..='\u{ff}' => false,
        _ => wide_has(c, C_UPPER),
    }
}

/// `c.is_lowercase()`.
#[inline]
pub(crate) fn is_lower(c: char) -> bool {
    match c {
        'a'..='z' | '\u{aa}' | '\u{b5}' | '\u{ba}' | '\u{df}'..='\u{f6}' | '\u{f8}'..='\u{ff}' => {
            true
        }
        '\0'..='\u{ff}' => false,
        _ => wide_has(c, C_LOWER),
    }
}

/// `c.is_alphabetic()`.
#[inline]
pub(crate) fn is_alpha(c: char) -> bool {
    if c <= '\u{ff}' {
        is_upper(c) || is_lower(c)
    } else {
        wide_has(c, C_ALPHA)
    }
}

/// Appends `c.to_lowercase()` to `buf`.
#[inline]
pub(crate) fn push_lower(buf: &mut String, c: char) {
    match c {
        // In Latin-1 the capitals are the small letters less 0x20.
        'A'..='Z' | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{de}' => {
            buf.push(char::from_u32(c as u32 + 0x20).unwrap_or(c));
        }
        '\0'..='\u{ff}' => buf.push(c),
        // A lower-case character is its own lower case (true of every character; the tests
        // check it), and most letters of a word are: no search of the Unicode tables.
        _ if is_lower(c) => buf.push(c),
        _ => buf.extend(c.to_lowercase()),
    }
}

/// Splits `text` into tokens.
#[cfg(test)]
pub(crate) fn lex(text: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    lex_into(text, &mut toks, &mut Vec::new(), &mut Vec::new());
    toks
}

/// How many words a text has, and how many of them start with a capital.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WordCounts {
    pub words: usize,
    pub capitalised: usize,
}

/// Where tokens go, and what is noted about them as they are made: a second pass over the
/// tokens would cost as much again as making them.
struct Sink<'a> {
    toks: &'a mut Vec<Tok>,
    titles: &'a mut Vec<usize>,
    counts: WordCounts,
    /// Index of the last `Num` token; far enough back to read as none before the first.
    last_num: usize,
}

impl Sink<'_> {
    #[inline(always)]
    fn push(&mut self, start: usize, end: usize, kind: Kind, gap: Gap, flags: u8, ch: u8) {
        let idx = self.toks.len();
        if kind == Kind::Num {
            self.last_num = idx;
        }
        if kind == Kind::Word {
            self.counts.words += 1;
            if flags & UPPER_FIRST != 0 {
                self.counts.capitalised += 1;
                if flags & HAS_LOWER != 0 {
                    self.titles.push(idx);
                }
            }
        }
        self.toks.push(Tok {
            start,
            end,
            kind,
            gap,
            flags,
            ch,
            num_back: u32::try_from(idx.wrapping_sub(self.last_num)).unwrap_or(u32::MAX),
            info: WordInfo::default(),
        });
    }
}

/// Splits `text` into tokens, into `toks` (cleared first; its capacity is reused); lists in
/// `web_marks` (cleared first) the index of every `@`, `:` and `.` token, where the web pass
/// looks, and in `titles` (cleared first) every word in title case (`Smith`); fills in each
/// token's [`Tok::num_back`] and returns how many words there are and how many are
/// capitalised.
///
/// The common case, ASCII text, costs one table load per byte plus a little per token; a
/// non-ASCII character sends its token down a slower path that decodes it.
// Called once per text: inlined into the detection loop it only crowds both of them (the
// inliner has gone either way as the code around it changed).
#[inline(never)]
pub(crate) fn lex_into(
    text: &str,
    toks: &mut Vec<Tok>,
    web_marks: &mut Vec<usize>,
    titles: &mut Vec<usize>,
) -> WordCounts {
    let b = text.as_bytes();
    let n = b.len();
    toks.clear();
    web_marks.clear();
    titles.clear();
    toks.reserve(n / 4 + 4);
    let mut out = Sink {
        toks,
        titles,
        counts: WordCounts::default(),
        last_num: usize::MAX / 2,
    };
    let mut i = 0;
    // The whitespace before the next token, as it accumulates: a space makes `Space`, a
    // line break `Line`, a second one `Para`.
    let mut gap = Gap::None;
    while i < n {
        let c = b[i];
        let cls = BYTE[c as usize];
        if cls & B_SPACE != 0 {
            if gap == Gap::None {
                gap = Gap::Space;
            }
            i += 1;
            continue;
        }
        if cls & B_NEWLINE != 0 {
            gap = if gap >= Gap::Line {
                Gap::Para
            } else {
                Gap::Line
            };
            i += 1;
            continue;
        }
        let start = i;
        if cls & B_RUN != 0 {
            let mut cls = cls;
            loop {
                // A run of letters and digits: ASCII bytes through the table.
                let start = i;
                let mut seen = cls;
                i += 1;
                while i < n {
                    let k = BYTE[b[i] as usize];
                    if k & B_RUN == 0 {
                        break;
                    }
                    seen |= k;
                    i += 1;
                }
                let first_upper = cls & B_UPPER != 0;
                let (kind, flags) = if i < n && b[i] >= 0x80 {
                    // It may go on with non-ASCII letters.
                    let (end, kind, flags) = run_tail(text, start, i, seen, first_upper);
                    i = end;
                    (kind, flags)
                } else {
                    let (kind, flags) = RUN_SUMMARY[(seen & B_RUN) as usize];
                    (kind, flags | if first_upper { UPPER_FIRST } else { 0 })
                };
                out.push(start, i, kind, gap, flags, 0);
                // The commonest next thing, one space and another run, goes straight on.
                if i + 1 < n && b[i] == b' ' {
                    let k = BYTE[b[i + 1] as usize];
                    if k & B_RUN != 0 {
                        gap = Gap::Space;
                        i += 1;
                        cls = k;
                        continue;
                    }
                }
                break;
            }
        } else if cls & B_PUNCT != 0 {
            if matches!(c, b'@' | b':' | b'.') {
                web_marks.push(out.toks.len());
            }
            i += 1;
            out.push(start, i, Kind::Punct, gap, 0, c);
        } else {
            // A non-ASCII character: a letter starts a run, whitespace separates, anything
            // else is a token of its own.
            let ch = text.get(i..).and_then(|r| r.chars().next()).unwrap_or(' ');
            let (kind, flags) = if is_word_char(ch) {
                let (end, kind, flags) = run_tail(text, start, i, 0, is_upper(ch));
                i = end;
                (kind, flags)
            } else if ch.is_whitespace() {
                if gap == Gap::None {
                    gap = Gap::Space;
                }
                i += ch.len_utf8();
                continue;
            } else {
                i += ch.len_utf8();
                (Kind::Other, 0)
            };
            out.push(start, i, kind, gap, flags, 0);
        }
        gap = Gap::None;
    }
    out.counts
}

/// The rest of a letter-digit run that reaches a non-ASCII byte at `i` (or starts with a
/// non-ASCII letter there): decodes characters, and goes on through ASCII letters and digits.
/// `seen` sums the ASCII bytes so far. Returns the run's end, kind and flags.
#[cold]
fn run_tail(
    text: &str,
    start: usize,
    mut i: usize,
    mut seen: u8,
    first_upper: bool,
) -> (usize, Kind, u8) {
    let b = text.as_bytes();
    let n = b.len();
    let mut letters = false;
    let mut uppers = false;
    let mut lowers = false;
    let mut non_ascii = false;
    loop {
        while i < n {
            let k = BYTE[b[i] as usize];
            if k & B_RUN == 0 {
                break;
            }
            seen |= k;
            i += 1;
        }
        if i >= n || b[i] < 0x80 {
            break;
        }
        let Some(ch) = text.get(i..).and_then(|r| r.chars().next()) else {
            break;
        };
        // `is_word_char`, `is_alpha`, `is_upper` and `is_lower` at once.
        let facts = char_facts(ch);
        if facts & C_ALPHA == 0 && !('\u{300}'..='\u{36f}').contains(&ch) {
            break;
        }
        non_ascii = true;
        if facts & C_ALPHA != 0 {
            letters = true;
            if facts & C_UPPER != 0 {
                uppers = true;
            } else if facts & C_LOWER != 0 {
                lowers = true;
            }
        }
        i += ch.len_utf8();
    }
    let digits = seen & B_DIGIT != 0;
    if seen & B_UPPER != 0 {
        letters = true;
        uppers = true;
    }
    if seen & B_LOWER != 0 {
        letters = true;
        lowers = true;
    }
    // A run that starts with a digit has no upper-case first letter.
    let first_upper = first_upper && !b[start].is_ascii_digit();
    let kind = if !letters {
        Kind::Num
    } else if !digits {
        Kind::Word
    } else {
        Kind::AlNum
    };
    let mut flags = 0;
    if first_upper {
        flags |= UPPER_FIRST;
    }
    if uppers && !lowers {
        flags |= ALL_UPPER;
    }
    if lowers {
        flags |= HAS_LOWER;
    }
    if non_ascii {
        flags |= NON_ASCII;
    }
    if digits {
        flags |= HAS_DIGIT;
    }
    (i, kind, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(String, Kind, Gap)> {
        lex(text)
            .into_iter()
            .map(|t| (text[t.start..t.end].to_owned(), t.kind, t.gap))
            .collect()
    }

    #[test]
    fn splits_words_numbers_and_punctuation() {
        let got = kinds("Dr. Zoë O'Neil, MRN 00123\n\nVIN 1HGCM82633A004352 – ok");
        let want = [
            ("Dr", Kind::Word, Gap::None),
            (".", Kind::Punct, Gap::None),
            ("Zoë", Kind::Word, Gap::Space),
            ("O", Kind::Word, Gap::Space),
            ("'", Kind::Punct, Gap::None),
            ("Neil", Kind::Word, Gap::None),
            (",", Kind::Punct, Gap::None),
            ("MRN", Kind::Word, Gap::Space),
            ("00123", Kind::Num, Gap::Space),
            ("VIN", Kind::Word, Gap::Para),
            ("1HGCM82633A004352", Kind::AlNum, Gap::Space),
            ("–", Kind::Other, Gap::Space),
            ("ok", Kind::Word, Gap::Space),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(s, k, g)| ((*s).to_owned(), *k, *g))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn latin1_letter_case_is_unicodes() {
        for u in 0..0x800u32 {
            let Some(c) = char::from_u32(u) else { continue };
            assert_eq!(is_upper(c), c.is_uppercase(), "{u:x}");
            assert_eq!(is_lower(c), c.is_lowercase(), "{u:x}");
            assert_eq!(is_alpha(c), c.is_alphabetic(), "{u:x}");
            let mut buf = String::new();
            push_lower(&mut buf, c);
            assert_eq!(buf, c.to_lowercase().collect::<String>(), "{u:x}");
        }
    }

    #[test]
    fn lower_case_characters_lower_to_themselves() {
        for u in 0..=0x10_ffffu32 {
            let Some(c) = char::from_u32(u) else { continue };
            if is_lower(c) {
                assert!(c.to_lowercase().eq([c]), "{u:x}");
            }
        }
    }

    #[test]
    fn char_facts_agree_with_the_single_tests() {
        for u in 0..0x3000u32 {
            let Some(c) = char::from_u32(u) else { continue };
            let f = char_facts(c);
            assert_eq!(f, std_facts(c), "{u:x}");
            assert_eq!(f & C_ALPHA != 0, is_alpha(c), "{u:x}");
            assert_eq!(f & C_UPPER != 0, is_upper(c), "{u:x}");
            assert_eq!(f & C_LOWER != 0, is_lower(c), "{u:x}");
        }
    }

    #[test]
    fn case_flags() {
        let t = lex("Smith SMITH smith Željko e\u{301}clair");
        assert!(t[0].is_title() && !t[0].all_upper());
        assert!(t[1].all_upper() && t[1].is_cap() && !t[1].is_title());
        assert!(t[2].is_lower());
        assert!(t[3].is_title() && t[3].flags & NON_ASCII != 0);
        // A decomposed accent does not split the word.
        assert_eq!(t.len(), 5);
    }
}
