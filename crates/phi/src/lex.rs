//! The one pass over the input bytes: splits text into words, numbers, mixed letter-digit runs
//! and single punctuation marks, remembering what whitespace came before each. Every detector
//! works on these tokens, so the bytes are classified once, not once per pattern.
//!
//! Offsets are byte offsets into the UTF-8 input and always fall on character boundaries:
//! the lexer only ever advances by whole characters.

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

#[derive(Clone, Copy, Debug)]
pub(crate) struct Tok {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub gap: Gap,
    /// Letter-case flags (`UPPER_FIRST` …) for words and mixed runs.
    pub flags: u8,
    /// The character, for `Punct`.
    pub ch: u8,
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

const SPACE: u8 = 0;
const ALNUM: u8 = 1;
const PUNCT: u8 = 2;
const NEWLINE: u8 = 3;

const fn class_table() -> [u8; 128] {
    let mut t = [PUNCT; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] = ALNUM;
        } else if b == b'\n' {
            t[c] = NEWLINE;
        } else if b == b' ' || b == b'\t' || b == b'\r' || b == 0x0b || b == 0x0c {
            t[c] = SPACE;
        } else if b < 0x20 || b == 0x7f {
            // Control characters separate tokens like spaces do.
            t[c] = SPACE;
        }
        c += 1;
    }
    t
}

static CLASS: [u8; 128] = class_table();

const RUN_DIGIT: u8 = 1;
const RUN_UPPER: u8 = 2;
const RUN_LOWER: u8 = 4;

const fn run_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_digit() {
            RUN_DIGIT
        } else if b.is_ascii_uppercase() {
            RUN_UPPER
        } else if b.is_ascii_lowercase() {
            RUN_LOWER
        } else {
            0
        };
        c += 1;
    }
    t
}

/// Letter-case class of each ASCII byte inside a letter-digit run; 0 ends the run.
static ASCII_RUN: [u8; 256] = run_table();

/// Combining marks (U+0300–U+036F) continue a word: decomposed `é` is `e` + U+0301.
fn is_word_char(c: char) -> bool {
    c.is_alphabetic() || ('\u{300}'..='\u{36f}').contains(&c)
}

/// Splits `text` into tokens.
#[cfg(test)]
pub(crate) fn lex(text: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    lex_into(text, &mut toks);
    toks
}

/// Splits `text` into tokens, into `toks` (cleared first; its capacity is reused).
pub(crate) fn lex_into(text: &str, toks: &mut Vec<Tok>) {
    let b = text.as_bytes();
    let n = b.len();
    toks.clear();
    toks.reserve(n / 4 + 4);
    let mut i = 0;
    let mut newlines = 0u32;
    let mut spaced = false;
    while i < n {
        let c = b[i];
        let (is_run, is_space) = if c < 0x80 {
            match CLASS[c as usize] {
                SPACE => (false, true),
                NEWLINE => {
                    newlines += 1;
                    i += 1;
                    spaced = true;
                    continue;
                }
                ALNUM => (true, false),
                _ => (false, false),
            }
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            if is_word_char(ch) {
                (true, false)
            } else if ch.is_whitespace() {
                i += ch.len_utf8();
                spaced = true;
                continue;
            } else {
                (false, false)
            }
        };
        if is_space {
            i += 1;
            spaced = true;
            continue;
        }
        let gap = match (newlines, spaced) {
            (0, false) => Gap::None,
            (0, true) => Gap::Space,
            (1, _) => Gap::Line,
            _ => Gap::Para,
        };
        newlines = 0;
        spaced = false;
        let start = i;
        if !is_run {
            if c < 0x80 {
                toks.push(Tok {
                    start,
                    end: i + 1,
                    kind: Kind::Punct,
                    gap,
                    flags: 0,
                    ch: c,
                });
                i += 1;
            } else {
                let len = text[i..].chars().next().map_or(1, char::len_utf8);
                toks.push(Tok {
                    start,
                    end: i + len,
                    kind: Kind::Other,
                    gap,
                    flags: 0,
                    ch: 0,
                });
                i += len;
            }
            continue;
        }
        // A run of letters and digits. ASCII bytes go through a table; other characters
        // are decoded.
        let mut letters = 0u32;
        let mut digits = 0u32;
        let mut uppers = 0u32;
        let mut lowers = 0u32;
        let mut first_upper = false;
        let mut non_ascii = false;
        let mut seen: u8 = 0;
        if c < 0x80 {
            first_upper = c.is_ascii_uppercase();
        }
        loop {
            // ASCII letters and digits, one table load each (0 ends the run, and every
            // non-ASCII byte maps to 0 too).
            while i < n {
                let cls = ASCII_RUN[b[i] as usize];
                if cls == 0 {
                    break;
                }
                seen |= cls;
                i += 1;
            }
            if i >= n || b[i] < 0x80 {
                break;
            }
            let Some(ch) = text.get(i..).and_then(|r| r.chars().next()) else {
                break;
            };
            if !is_word_char(ch) {
                break;
            }
            if i == start {
                first_upper = ch.is_uppercase();
            }
            non_ascii = true;
            if ch.is_alphabetic() {
                letters += 1;
                if ch.is_uppercase() {
                    uppers += 1;
                } else if ch.is_lowercase() {
                    lowers += 1;
                }
            }
            i += ch.len_utf8();
        }
        if seen & RUN_DIGIT != 0 {
            digits += 1;
        }
        if seen & RUN_UPPER != 0 {
            letters += 1;
            uppers += 1;
        }
        if seen & RUN_LOWER != 0 {
            letters += 1;
            lowers += 1;
        }
        // A run that starts with a digit has no upper-case first letter.
        if b[start].is_ascii_digit() {
            first_upper = false;
        }
        let kind = if letters == 0 {
            Kind::Num
        } else if digits == 0 {
            Kind::Word
        } else {
            Kind::AlNum
        };
        let mut flags = 0;
        if first_upper {
            flags |= UPPER_FIRST;
        }
        if uppers > 0 && lowers == 0 {
            flags |= ALL_UPPER;
        }
        if lowers > 0 {
            flags |= HAS_LOWER;
        }
        if non_ascii {
            flags |= NON_ASCII;
        }
        if digits > 0 {
            flags |= HAS_DIGIT;
        }
        toks.push(Tok {
            start,
            end: i,
            kind,
            gap,
            flags,
            ch: 0,
        });
    }
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
