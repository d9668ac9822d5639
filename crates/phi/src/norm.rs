//! What the detector reads instead of the input when the input hides characters: a normalised
//! copy (NFKC compatibility forms, every script's decimal digits as ASCII digits, hyphen and
//! dash variants as `-`, invisible format characters removed) and the map from its byte
//! offsets back to the input's, so that findings point into the text as it was written.
//!
//! Why: `４５７-５５-５４６２`, `457‐55‐5462` (U+2010), `45\u{ad}7-55-5462` (a soft hyphen) and
//! `Jo\u{200b}hn` read as an SSN and a name to a person and to a model, but not to patterns
//! written over ASCII. Most text needs none of this: ASCII text is recognised in one pass
//! and detected as it is, and so is other text without such characters.
//!
//! Each input character becomes zero or more output characters on its own (compatibility
//! decomposition then composition, one character at a time), so every output byte comes from
//! exactly one input character. Whitespace is left as it is: the lexer already reads every
//! Unicode space as a space.

use unicode_normalization::UnicodeNormalization;

/// One input character that the normalised text writes differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Edit {
    /// Byte range of the input character.
    orig: usize,
    orig_len: usize,
    /// Byte range of what it became in the normalised text (empty when removed).
    norm: usize,
    norm_len: usize,
}

/// A normalised copy of an input and the way back to the input's byte offsets.
#[derive(Debug)]
pub(crate) struct Normalised {
    pub text: String,
    /// In input order (and so in normalised order too).
    edits: Vec<Edit>,
}

impl Normalised {
    /// The input offset of a span that starts at normalised offset `n` (a character
    /// boundary of the normalised text): characters removed just before it are left out.
    pub fn orig_start(&self, n: usize) -> usize {
        let k = self.edits.partition_point(|e| e.norm + e.norm_len <= n);
        if let Some(e) = self.edits.get(k)
            && e.norm < n
        {
            // Inside what one input character became ("…" became "..."): that character.
            return e.orig;
        }
        self.shifted(k, n)
    }

    /// The input offset of a span that ends at normalised offset `n`: characters removed just
    /// after it are left out.
    pub fn orig_end(&self, n: usize) -> usize {
        let k = self.edits.partition_point(|e| {
            e.norm + e.norm_len < n || (e.norm + e.norm_len == n && e.norm_len > 0)
        });
        if let Some(e) = self.edits.get(k)
            && e.norm < n
            && n < e.norm + e.norm_len
        {
            return e.orig + e.orig_len;
        }
        self.shifted(k, n)
    }

    /// `n` moved by what the first `k` edits added or removed.
    fn shifted(&self, k: usize, n: usize) -> usize {
        match k.checked_sub(1).and_then(|i| self.edits.get(i)) {
            Some(e) => n + (e.orig + e.orig_len) - (e.norm + e.norm_len),
            None => n,
        }
    }
}

/// The normalised copy of `text`, or `None` when normalising would change nothing (all ASCII
/// text, and most other text).
pub(crate) fn normalise(text: &str) -> Option<Normalised> {
    // Most text is ASCII: the standard library's word-at-a-time test says so first.
    if text.is_ascii() {
        return None;
    }
    // Only the non-ASCII characters can need a rewrite: the ASCII bytes between them are
    // stepped over without decoding.
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(&byte) = b.get(i) {
        if byte < 0x80 {
            i += 1;
            continue;
        }
        let c = text.get(i..).and_then(|r| r.chars().next())?;
        if rewrite(c, || neighbours(text, i, c)).is_some() {
            return Some(normalise_from(text, i));
        }
        i += c.len_utf8();
    }
    None
}

/// Whether the characters around the one at byte `i` of `s` are digits (before, after), for
/// the dashes that are read as hyphens only between digits.
fn neighbours(s: &str, i: usize, c: char) -> (bool, bool) {
    let before = s
        .get(..i)
        .and_then(|b| b.chars().next_back())
        .is_some_and(is_digit_like);
    let after = s
        .get(i + c.len_utf8()..)
        .and_then(|a| a.chars().next())
        .is_some_and(is_digit_like);
    (before, after)
}

/// A character that normalises to a decimal digit.
fn is_digit_like(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric() && digit_value(c).is_some())
}

/// How the normalised text writes `c`, when not as itself. `digits` says whether a digit is
/// just before and just after it (asked only about a dash).
fn rewrite(c: char, digits: impl FnOnce() -> (bool, bool)) -> Option<Rewrite> {
    // Latin-1 letters (most accented names) and curly quotes have no other form: the
    // common non-ASCII characters are settled before any table is asked.
    if c.is_ascii() || ('\u{c0}'..='\u{ff}').contains(&c) || ('\u{2018}'..='\u{201f}').contains(&c)
    {
        return None;
    }
    if c.is_whitespace() {
        return None;
    }
    if is_ignorable(c) {
        return Some(Rewrite::Remove);
    }
    if is_hyphen(c)
        || (is_dash(c) && {
            let (before, after) = digits();
            before || after
        })
    {
        return Some(Rewrite::Char('-'));
    }
    if let Some(d) = digit_value(c) {
        return Some(Rewrite::Char(char::from(b'0' + d)));
    }
    // Only a few thousand characters have a compatibility form; the quick check rules out
    // the rest (accented letters, curly quotes, most scripts) without composing anything.
    if unicode_normalization::is_nfkc_quick(std::iter::once(c))
        == unicode_normalization::IsNormalized::Yes
    {
        return None;
    }
    let mut out = String::new();
    for n in std::iter::once(c).nfkc() {
        match n {
            n if is_hyphen(n) || is_dash(n) => out.push('-'),
            n if is_ignorable(n) => {}
            n => out.push(n),
        }
    }
    if out.chars().eq(std::iter::once(c)) {
        return None;
    }
    Some(Rewrite::Text(out))
}

enum Rewrite {
    Remove,
    Char(char),
    Text(String),
}

/// [`normalise`] once the first character to rewrite is known to be at byte `from`.
#[cold]
fn normalise_from(text: &str, from: usize) -> Normalised {
    let mut out = String::with_capacity(text.len());
    out.push_str(text.get(..from).unwrap_or(""));
    let mut edits = Vec::new();
    let rest = text.get(from..).unwrap_or("");
    for (i, c) in rest.char_indices() {
        let orig = from + i;
        let rewritten = rewrite(c, || neighbours(rest, i, c));
        let Some(r) = rewritten else {
            out.push(c);
            continue;
        };
        let norm = out.len();
        match r {
            Rewrite::Remove => {}
            Rewrite::Char(ch) => out.push(ch),
            Rewrite::Text(s) => out.push_str(&s),
        }
        edits.push(Edit {
            orig,
            orig_len: c.len_utf8(),
            norm,
            norm_len: out.len() - norm,
        });
    }
    Normalised { text: out, edits }
}

/// Hyphens and minus signs: `-` wherever they are.
fn is_hyphen(c: char) -> bool {
    matches!(
        c,
        '\u{2010}' // hyphen
            | '\u{2011}' // non-breaking hyphen
            | '\u{2043}' // hyphen bullet
            | '\u{2212}' // minus sign
            | '\u{02d7}' // modifier letter minus sign
            | '\u{fe63}' // small hyphen-minus
            | '\u{ff0d}' // full-width hyphen-minus
            | '\u{058a}' // Armenian hyphen
            | '\u{1806}' // Mongolian todo soft hyphen
            | '\u{2e17}' // double oblique hyphen
            | '\u{2e1a}' // hyphen with diaeresis
            | '\u{2e40}' // double hyphen
            | '\u{2796}' // heavy minus sign
    )
}

/// Dashes: `-` between digits (`457–55–5462`); elsewhere they are punctuation between words
/// and stay as written.
fn is_dash(c: char) -> bool {
    matches!(
        c,
        '\u{2012}' // figure dash
            | '\u{2013}' // en dash
            | '\u{2014}' // em dash
            | '\u{2015}' // horizontal bar
            | '\u{2e3a}' // two-em dash
            | '\u{2e3b}' // three-em dash
            | '\u{fe58}' // small em dash
            | '\u{fe31}' // presentation form for vertical em dash
            | '\u{fe32}' // presentation form for vertical en dash
            | '\u{301c}' // wave dash
            | '\u{3030}' // wavy dash
    )
}

/// Characters with no visible form that text shows without (Unicode's default-ignorable
/// code points that appear in text: soft hyphen, zero-width space and joiners, direction
/// marks and embeddings, word joiner and invisible operators, variation selectors, the byte
/// order mark, tags).
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{061c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fff8}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// The first code point (the zero) of each run of ten decimal digits (Unicode category Nd)
/// outside ASCII that NFKC leaves as they are (Arabic-Indic, Devanagari, Thai, …; the
/// full-width and mathematical digits are NFKC's). From Unicode 14's character database.
const DIGIT_ZEROS: [u32; 58] = [
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0x104A0,
    0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0,
    0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50, 0x1E140,
    0x1E2F0, 0x1E950,
];

/// The value of a decimal digit of another script (from [`DIGIT_ZEROS`]), or of a full-width
/// or mathematical digit.
fn digit_value(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x660 {
        return None;
    }
    if (0xFF10..=0xFF19).contains(&u) {
        return u8::try_from(u - 0xFF10).ok();
    }
    if (0x1D7CE..=0x1D7FF).contains(&u) {
        return u8::try_from((u - 0x1D7CE) % 10).ok();
    }
    let k = DIGIT_ZEROS.partition_point(|&z| z <= u);
    let zero = *DIGIT_ZEROS.get(k.checked_sub(1)?)?;
    (u - zero < 10)
        .then(|| u8::try_from(u - zero).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// Every byte of the normalised text maps back into the input, in order, and a span
    /// over all of it maps to all of the input's non-removed characters.
    fn check_maps(text: &str) -> Normalised {
        let n = normalise(text).unwrap_or(Normalised {
            text: text.to_owned(),
            edits: Vec::new(),
        });
        let mut last = 0;
        for (i, _) in n.text.char_indices() {
            let s = n.orig_start(i);
            assert!(text.is_char_boundary(s) && s >= last, "{text:?} {i}");
            last = s;
        }
        for (i, c) in n.text.char_indices() {
            let e = n.orig_end(i + c.len_utf8());
            assert!(
                text.is_char_boundary(e) && e > n.orig_start(i),
                "{text:?} {i}"
            );
        }
        n
    }

    #[test]
    fn plain_text_is_not_copied() {
        for t in ["SSN 457-55-5462", "Zoë O’Neil – café", "a\u{a0}b", ""] {
            assert!(normalise(t).is_none(), "{t:?}");
        }
    }

    #[test]
    fn hidden_forms_become_what_they_show() {
        let cases = [
            ("４５７-５５-５４６２", "457-55-5462"),
            ("457\u{2010}55\u{2011}5462", "457-55-5462"),
            ("457\u{2013}55\u{2014}5462", "457-55-5462"),
            ("45\u{ad}7-55-54\u{200b}62", "457-55-5462"),
            ("٤٥٧-٥٥-٥٤٦٢", "457-55-5462"),
            ("Ｊｏｈｎ Smith", "John Smith"),
            ("Jo\u{200d}hn\u{feff}", "John"),
            ("x\u{2212}1", "x-1"),
            // Dashes between words are punctuation: kept.
            ("Smith \u{2013} Jones", "Smith \u{2013} Jones"),
            ("ﬁne…", "fine..."),
        ];
        for (input, want) in cases {
            let n = check_maps(input);
            assert_eq!(n.text, want, "{input:?}");
        }
    }

    #[test]
    fn offsets_map_back_to_the_characters_as_written() {
        let text = "SSN ４５７-５５-５４６２ ok";
        let n = check_maps(text);
        let s = n.text.find("457").unwrap();
        let e = n.text.find(" ok").unwrap();
        let (a, b) = (n.orig_start(s), n.orig_end(e));
        assert_eq!(&text[a..b], "４５７-５５-５４６２");
        // A removed character inside a span is covered; one at its edges is not.
        let text = "\u{200b}Jo\u{ad}hn\u{200b} x";
        let n = check_maps(text);
        assert_eq!(n.text, "John x");
        let (a, b) = (n.orig_start(0), n.orig_end(4));
        assert_eq!(&text[a..b], "Jo\u{ad}hn");
        // Inside an expansion: the whole input character.
        let text = "a…b";
        let n = check_maps(text);
        assert_eq!(n.text, "a...b");
        assert_eq!(&text[n.orig_start(2)..n.orig_end(3)], "…");
    }

    #[test]
    fn digit_zeros_are_digits() {
        for &z in &DIGIT_ZEROS {
            for d in 0..10 {
                let c = char::from_u32(z + d).unwrap_or(' ');
                assert!(c.is_numeric(), "{:x}", z + d);
                assert_eq!(digit_value(c), u8::try_from(d).ok(), "{:x}", z + d);
            }
        }
        assert_eq!(digit_value('５'), Some(5));
        assert_eq!(digit_value('a'), None);
    }
}
