//! The detection pipeline: lex once, run the pattern families over the tokens in a fixed
//! order (later families skip tokens an earlier one claimed), then merge the candidates into
//! non-overlapping spans.
//!
//! Order matters and is deliberate: web identifiers (e-mail, URL, IP) first, because their
//! insides look like names and numbers; addresses next, because house numbers and postal
//! codes are numbers whose meaning only the address shape gives; then keyword-claimed
//! identifiers and shaped numbers; then month-name dates and ages; names last, since every
//! other family can veto a capitalised word.

mod address;
mod dates;
mod names;
mod numbers;
mod places;
mod web;

use std::collections::HashSet;

use crate::dict::{self, Ctx, Dict, WordInfo};
use crate::lex::{self, Gap, Kind, Tok};
use crate::{Category, Span};

/// Candidates scoring below this are kept (a detector configured lower reports them) but
/// leave their tokens free for the other families.
pub(crate) const WEAK: f32 = 0.5;

/// A candidate span before merging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cand {
    pub start: usize,
    pub end: usize,
    pub cat: Category,
    pub score: f32,
}

/// The reusable buffers of a scan: the per-token ones, which the families index on every
/// step, and the rest boxed, so that handing them from the thread's pool to a scan and back
/// moves a few words rather than the whole set (most messages are short, and this is paid
/// per message).
#[derive(Default)]
struct Buffers {
    toks: Vec<Tok>,
    /// The candidates: most messages have none or a few, and the spans handed back are
    /// copied out of it, so a message without any allocates nothing.
    out: Vec<Cand>,
    scratch: Box<Scratch>,
}

/// Buffers that only some steps of a scan use.
#[derive(Default)]
struct Scratch {
    /// The `@`, `:` and `.` tokens, in order.
    web_marks: Vec<usize>,
    /// The words in title case (`Smith`), in order.
    titles: Vec<usize>,
    /// Scratch space of [`repeat_names`].
    known: KnownWords,
    found: Vec<usize>,
    name_words: Vec<(usize, usize)>,
    buf: String,
    phrase: String,
}

thread_local! {
    static POOL: std::cell::Cell<Option<Buffers>> = const { std::cell::Cell::new(None) };
}

/// State shared by the detector families for one input.
pub(crate) struct Scan<'t> {
    pub text: &'t str,
    pub toks: Vec<Tok>,
    pub dict: &'static Dict,
    /// Words in the text, and how many of them are capitalised.
    counts: lex::WordCounts,
    pub out: Vec<Cand>,
    /// The buffers the families use now and then.
    scratch: Box<Scratch>,
    /// The recall-oriented setting ([`crate::Detector::high_recall`]): a lower-case first
    /// name followed by a surname counts even where both are also English words
    /// (`john smith`).
    pub recall: bool,
}

impl<'t> Scan<'t> {
    /// A scan of `text`, reusing the buffers of the previous scan on this thread: the
    /// gateway calls this for every message, most of them short, where allocating five
    /// vectors would cost as much as the detection.
    pub fn new(text: &'t str) -> Self {
        let mut b = POOL.with(|p| p.take()).unwrap_or_default();
        let counts = lex::lex_into(
            text,
            &mut b.toks,
            &mut b.scratch.web_marks,
            &mut b.scratch.titles,
        );
        // Dictionary facts ([`Tok::info`]) are looked up lazily, token by token, when a
        // family asks (a token that is not a word gets none then)…
        // … except for the words in title case: nearly every one is looked up in full
        // sooner or later (the address family asks first, then the name family), and
        // asked for at any level such a word is looked up in full (see
        // [`Scan::lookup_slow`]), so they are looked up here, in one loop, rather than in a
        // call each when first asked.
        let dict = dict::dict();
        for &i in &b.scratch.titles {
            if let Some(t) = b.toks.get_mut(i) {
                t.info = word_info(dict, text, *t, 2, &mut b.scratch.buf).with_level(2);
            }
        }
        b.out.clear();
        Scan {
            text,
            toks: b.toks,
            dict,
            counts,
            out: b.out,
            scratch: b.scratch,
            recall: false,
        }
    }

    /// Ends the scan: keeps the candidates `keep` accepts, merges them into spans, and gives
    /// the buffers back to the thread's pool (large ones are dropped rather than kept). The
    /// spans are returned in a vector of their exact size (none allocated for none).
    fn finish(mut self, keep: impl Fn(&Cand) -> bool) -> Vec<Span> {
        self.out.retain(keep);
        merge(&mut self.out);
        let spans = self
            .out
            .iter()
            .map(|c| Span {
                category: c.cat,
                start: c.start,
                end: c.end,
                score: c.score,
            })
            .collect();
        if self.toks.capacity() <= 1 << 16 && self.out.capacity() <= 1 << 12 {
            let b = Buffers {
                toks: self.toks,
                out: self.out,
                scratch: self.scratch,
            };
            POOL.with(|p| p.set(Some(b)));
        }
        spans
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.toks.len()
    }

    /// The token's bytes.
    #[inline]
    pub fn bytes(&self, i: usize) -> &'t [u8] {
        match self.toks.get(i) {
            Some(t) => self.text.as_bytes().get(t.start..t.end).unwrap_or_default(),
            None => &[],
        }
    }

    /// The token's text.
    #[inline]
    pub fn s(&self, i: usize) -> &'t str {
        match self.toks.get(i) {
            Some(t) => self.text.get(t.start..t.end).unwrap_or(""),
            None => "",
        }
    }

    #[inline]
    pub fn tok(&self, i: usize) -> Option<&Tok> {
        self.toks.get(i)
    }

    /// Dictionary facts about word token `i`, looked up once: everything for a capitalised
    /// word, only the context lists for a lower-case one (see [`Scan::info_full`]).
    #[inline]
    pub fn info(&mut self, i: usize) -> WordInfo {
        let full = self.toks.get(i).is_some_and(Tok::is_cap);
        self.lookup(i, if full { 2 } else { 1 })
    }

    /// Only the context-list facts about word token `i` (cheap, even for a capitalised
    /// word): enough to test for a street prefix, a unit, a title or a keyword.
    #[inline]
    pub fn info_small(&mut self, i: usize) -> WordInfo {
        self.lookup(i, 1)
    }

    /// Everything the dictionary knows about word token `i`, whatever its case.
    #[inline]
    pub fn info_full(&mut self, i: usize) -> WordInfo {
        self.lookup(i, 2)
    }

    #[inline]
    fn lookup(&mut self, i: usize, level: u8) -> WordInfo {
        // The common case, a word already looked up, stays inline; the dictionary is asked
        // out of line.
        match self.toks.get(i).map(|t| t.info) {
            Some(info) if info.level() >= level => info,
            Some(_) => self.lookup_slow(i, level),
            None => WordInfo::default(),
        }
    }

    /// Looks token `i` up to `level` (it has not been yet), caches the answer and returns
    /// it.
    #[inline(never)]
    fn lookup_slow(&mut self, i: usize, level: u8) -> WordInfo {
        let Some(&t) = self.toks.get(i) else {
            return WordInfo::default();
        };
        if t.kind != Kind::Word {
            // Not a word: no facts, whatever the level.
            let none = WordInfo::default().with_level(2);
            if let Some(t) = self.toks.get_mut(i) {
                t.info = none;
            }
            return none;
        }
        // Nearly every capitalised word is looked up in full sooner or later (as a name
        // candidate), so it is looked up in full at once. What it reads as where only the
        // context lists were asked for does not change: the small table holds a word's full
        // facts or none, and for words it does not hold, only the context flags, keywords
        // and months are asked for (short all-capital words, which the name family does
        // classify from their small-table facts, keep the two steps).
        let len = t.len();
        let level = if level == 1 && t.is_cap() && !(t.all_upper() && len <= 3) {
            2
        } else {
            level
        };
        let info = if t.flags & lex::NON_ASCII == 0 && len <= 16 {
            // ASCII letters only (a word token has no digits): packed in a few instructions.
            self.dict
                .get_letters(self.text.as_bytes(), t.start, len, level == 1)
        } else {
            word_info(self.dict, self.text, t, level, &mut self.scratch.buf)
        }
        .with_level(level);
        if let Some(t) = self.toks.get_mut(i) {
            t.info = info;
        }
        info
    }

    /// Looks up a multi-word phrase (tokens `from..=to` joined by single spaces).
    pub fn phrase_info(&mut self, from: usize, to: usize) -> WordInfo {
        if let Some(key) = self.packed_phrase(from, to) {
            return self.dict.get_packed(key);
        }
        // The key is built in the scan's reusable string, which goes back on every path (a
        // phrase with a token that is not a word is common, and dropping the string there
        // made the next phrase allocate it again).
        let mut key = std::mem::take(&mut self.scratch.phrase);
        let info = self.phrase_info_in(from, to, &mut key);
        self.scratch.phrase = key;
        info
    }

    /// [`Scan::phrase_info`], building the key in `key`.
    fn phrase_info_in(&mut self, from: usize, to: usize, key: &mut String) -> WordInfo {
        // A phrase with a token that is not a word is none: tested before any lower-casing.
        // (An empty range looks up the empty key, as the loop below would.)
        let words = from > to
            || self
                .toks
                .get(from..=to)
                .is_some_and(|ts| ts.iter().all(|t| t.kind == Kind::Word));
        if !words {
            return WordInfo::default();
        }
        key.clear();
        for i in from..=to {
            let Some(t) = self.toks.get(i) else {
                return WordInfo::default();
            };
            if i > from {
                key.push(' ');
            }
            let s = self.text.get(t.start..t.end).unwrap_or("");
            key.push_str(dict::lower_into(s, &mut self.scratch.buf));
        }
        self.dict.get(key)
    }

    /// The phrase of tokens `from..=to` packed as [`dict::pack_lower`] packs it, when its
    /// words are ASCII and it fits (city and state names mostly do): the same key as
    /// [`Scan::phrase_info`] builds as a string, without the string.
    fn packed_phrase(&self, from: usize, to: usize) -> Option<u128> {
        let mut key = [0u8; 16];
        let mut n = 0;
        for i in from..=to {
            let t = self.toks.get(i)?;
            if t.kind != Kind::Word || t.flags & lex::NON_ASCII != 0 {
                return None;
            }
            let word = self.text.as_bytes().get(t.start..t.end)?;
            if i > from {
                *key.get_mut(n)? = b' ';
                n += 1;
            }
            key.get_mut(n..n + word.len())?.copy_from_slice(word);
            n += word.len();
        }
        // An ASCII word token is letters only: lower-casing is one bit.
        key.iter_mut()
            .take(n)
            .for_each(|c| c.make_ascii_lowercase());
        (n > 0).then(|| u128::from_le_bytes(key))
    }

    /// Whether token `i` is the lower-cased word `w` (ASCII).
    #[inline]
    pub fn is(&self, i: usize, w: &str) -> bool {
        // Compare bytes: no character-boundary checks on the hot path.
        match self.toks.get(i) {
            Some(t) if t.end - t.start == w.len() => self
                .text
                .as_bytes()
                .get(t.start..t.end)
                .is_some_and(|b| b.eq_ignore_ascii_case(w.as_bytes())),
            _ => false,
        }
    }

    /// Whether token `i` is an apostrophe, `'` or `’` (the curly one is a token of kind
    /// `Other`, tested before its bytes are compared).
    #[inline]
    pub fn is_apostrophe(&self, i: usize) -> bool {
        self.toks.get(i).is_some_and(|t| {
            t.is_punct(b'\'')
                || (t.kind == Kind::Other
                    && self.text.as_bytes().get(t.start..t.end) == Some("’".as_bytes()))
        })
    }

    #[inline]
    pub fn is_punct(&self, i: usize, c: u8) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_punct(c))
    }

    #[inline]
    pub fn kind(&self, i: usize) -> Option<Kind> {
        self.toks.get(i).map(|t| t.kind)
    }

    #[inline]
    pub fn gap(&self, i: usize) -> Gap {
        self.toks.get(i).map_or(Gap::Para, |t| t.gap)
    }

    #[inline]
    pub fn start(&self, i: usize) -> usize {
        self.toks.get(i).map_or(self.text.len(), |t| t.start)
    }

    #[inline]
    pub fn end(&self, i: usize) -> usize {
        self.toks.get(i).map_or(self.text.len(), |t| t.end)
    }

    /// Records a candidate over tokens `from..=to` and marks them used.
    #[inline]
    pub fn emit(&mut self, from: usize, to: usize, cat: Category, score: f32) {
        let (start, end) = (self.start(from), self.end(to));
        if start >= end {
            return;
        }
        self.out.push(Cand {
            start,
            end,
            cat,
            score,
        });
        // A weak guess does not stop the other families from looking at the same tokens.
        if score >= WEAK {
            // (A slice, not `take` and `skip`: their iterator costs a call here.)
            let end = (to + 1).min(self.toks.len());
            for t in self.toks.get_mut(from..end).unwrap_or_default() {
                t.flags |= lex::USED;
            }
        }
    }

    /// Records a candidate by byte range (for detectors that work below the token level)
    /// and marks every token inside it used.
    pub fn emit_bytes(&mut self, start: usize, end: usize, cat: Category, score: f32) {
        if start >= end {
            return;
        }
        self.out.push(Cand {
            start,
            end,
            cat,
            score,
        });
        if score < WEAK {
            return;
        }
        let first = self.toks.partition_point(|t| t.end <= start);
        for t in self.toks.get_mut(first..).unwrap_or_default() {
            if t.start >= end {
                break;
            }
            t.flags |= lex::USED;
        }
    }

    #[inline]
    pub fn is_used(&self, i: usize) -> bool {
        self.toks.get(i).is_none_or(|t| t.flags & lex::USED != 0)
    }

    /// The context keyword a single token stands for, if any. Besides dictionary keywords:
    /// `S/N` (serial), `MR#` (record number), `#` and `No.` (a generic number).
    pub fn tok_ctx(&mut self, i: usize) -> Ctx {
        let Some(&t) = self.toks.get(i) else {
            return Ctx::None;
        };
        match t.kind {
            Kind::Punct if t.ch == b'#' => Ctx::Id,
            Kind::Word => {
                let c = self.info_small(i).ctx();
                if c != Ctx::None {
                    // A capitalised "Turn" or "Last" at a sentence start is not a keyword, but
                    // the lower-case forms and labels are; keep it simple and trust them.
                    return c;
                }
                // The few other keywords, told apart by length first.
                let s = self.bytes(i);
                match s.len() {
                    1 if (s == b"N" || s == b"n")
                        && self.is_punct(i.wrapping_sub(1), b'/')
                        && (self.is(i.wrapping_sub(2), "s")) =>
                    {
                        Ctx::Device
                    }
                    2 if s == b"MR"
                        && (self.is_punct(i + 1, b'#') || self.is_punct(i + 1, b':')) =>
                    {
                        Ctx::Mrn
                    }
                    2 if (s.eq_ignore_ascii_case(b"no") || s.eq_ignore_ascii_case(b"nr"))
                        && self.is_punct(i + 1, b'.')
                        && t.is_cap() =>
                    {
                        Ctx::Id
                    }
                    // "medical record (number)", "health record".
                    6 | 7
                        if (s.eq_ignore_ascii_case(b"record")
                            || s.eq_ignore_ascii_case(b"records"))
                            && i > 0
                            && (self.is(i - 1, "medical") || self.is(i - 1, "health")) =>
                    {
                        Ctx::Mrn
                    }
                    _ => Ctx::None,
                }
            }
            _ => Ctx::None,
        }
    }

    /// Whether token `i` may stand between a keyword and its value.
    fn is_filler(&mut self, i: usize) -> bool {
        let Some(&t) = self.toks.get(i) else {
            return false;
        };
        match t.kind {
            Kind::Punct => matches!(
                t.ch,
                b':' | b'#'
                    | b'-'
                    | b'.'
                    | b'('
                    | b')'
                    | b'='
                    | b','
                    | b';'
                    | b'/'
                    | b'*'
                    | b'['
                    | b']'
                    | b'>'
            ),
            // (A context-list lookup has no effect but its answer: the length goes first.)
            Kind::Word => t.len() == 1 || self.info_small(i).has(dict::FILLER),
            Kind::Other => true,
            _ => false,
        }
    }

    /// The keyword context of a value starting at token `i`: the nearest keyword before it,
    /// across only filler (`MRN: 123`, `Member ID # 123`, `Phone:\n555…`), within 8 tokens, 60
    /// bytes and one line break. A generic keyword (`ID`, `#`) gives way to a specific one
    /// further back.
    pub fn ctx_before(&mut self, i: usize) -> Ctx {
        let start = self.start(i);
        let mut generic = Ctx::None;
        let mut lines = 0;
        let mut j = i;
        for _ in 0..8 {
            if j == 0 {
                break;
            }
            match self.gap(j) {
                Gap::Para => break,
                Gap::Line => {
                    lines += 1;
                    if lines > 1 {
                        break;
                    }
                }
                _ => {}
            }
            j -= 1;
            if start.saturating_sub(self.end(j)) > 60 {
                break;
            }
            let c = self.tok_ctx(j);
            if c != Ctx::None {
                if !c.is_generic() {
                    return c;
                }
                if generic == Ctx::None {
                    generic = c;
                }
                continue;
            }
            if !self.is_filler(j) {
                break;
            }
        }
        generic
    }

    /// Whether token `i` follows a title and its dot (`mr. elliott`): cheap, before any
    /// lookup.
    pub fn after_title_dot(&mut self, i: usize) -> bool {
        i >= 2 && self.is_punct(i - 1, b'.') && self.info_small(i - 2).has(dict::TITLE)
    }

    /// Whether token `i` follows a role word (`patient`, `wife`, `Dr`) on the same line:
    /// cheap, a filter on the word's letters before any lookup.
    #[inline]
    pub fn after_role_word(&mut self, i: usize) -> bool {
        i > 0
            && self.gap(i) == Gap::Space
            && self.kind(i - 1) == Some(Kind::Word)
            && self.dict.may_be_role(self.bytes(i - 1))
            && self.info_small(i - 1).has(dict::ROLE)
    }

    /// Whether token `i` starts a sentence or a line (so its capital says nothing).
    #[inline]
    pub fn sentence_start(&self, i: usize) -> bool {
        if i == 0 {
            return true;
        }
        if self.gap(i) >= Gap::Line {
            return true;
        }
        let Some(p) = self.toks.get(i - 1) else {
            return true;
        };
        match p.kind {
            Kind::Punct => {
                matches!(
                    p.ch,
                    b'.' | b'!' | b'?' | b':' | b'"' | b'>' | b'(' | b'[' | b'*'
                ) || (p.ch == b'-' && p.gap != Gap::None)
            }
            Kind::Other => true,
            _ => false,
        }
    }
}

/// A word of up to eight bytes with its ASCII letters lower-cased, packed into an integer
/// (zero-padded; no word has a zero byte), so that it is tested against a short list of
/// words with a few integer comparisons rather than a string comparison each. Longer words
/// pack to `u64::MAX`, which no listed word is.
pub(crate) const fn word8(w: &[u8]) -> u64 {
    if w.len() > 8 {
        return u64::MAX;
    }
    let mut k = 0;
    let mut i = w.len();
    while i > 0 {
        i -= 1;
        k = k << 8 | w[i].to_ascii_lowercase() as u64;
    }
    k
}

/// [`word8`] of each word of a list (at most eight bytes each), at compile time.
pub(crate) const fn words8<const N: usize>(ws: [&str; N]) -> [u64; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = word8(ws[i].as_bytes());
        i += 1;
    }
    out
}

/// Dictionary facts about token `t` of `text`: at `level` 1 only the context lists, at 2
/// everything (see [`Scan::info`]); nothing for a token that is not a word. `buf` is scratch
/// space for lower-casing.
#[inline]
fn word_info(dict: &Dict, text: &str, t: Tok, level: u8, buf: &mut String) -> WordInfo {
    if t.kind != Kind::Word {
        return WordInfo::default();
    }
    if t.flags & lex::NON_ASCII == 0 && t.len() <= 16 {
        // ASCII letters only (a word token has no digits): packed in a few instructions.
        return dict.get_letters(text.as_bytes(), t.start, t.len(), level == 1);
    }
    word_info_other(dict, text, t, level, buf)
}

/// [`word_info`] for a long or non-ASCII word.
#[cold]
#[inline(never)]
fn word_info_other(dict: &Dict, text: &str, t: Tok, level: u8, buf: &mut String) -> WordInfo {
    let s = text.get(t.start..t.end).unwrap_or("");
    match dict.get_raw(s.as_bytes(), level == 1) {
        Some(info) => info,
        None if t.len() > 40 => WordInfo::default(),
        None => {
            let lower = dict::lower_into(s, buf);
            if level == 2 {
                dict.get(lower)
            } else {
                dict.get_small(lower)
            }
        }
    }
}

/// The identifiers in `text`: every family's candidates that `keep` accepts, merged into
/// non-overlapping spans sorted by start.
///
/// `lower_case_names`: check every lower-case word against the name lists, as in text written
/// without capitals, whatever the rest of the text looks like (the recall-oriented setting).
///
/// Text with characters that hide what it shows (full-width digits, Unicode hyphens, soft
/// hyphens, zero-width characters: see [`crate::norm`]) is detected in its normalised form,
/// and the spans are mapped back to byte offsets of `text` as written.
pub(crate) fn spans(text: &str, lower_case_names: bool, keep: impl Fn(&Cand) -> bool) -> Vec<Span> {
    let Some(n) = crate::norm::normalise(text) else {
        return spans_as_written(text, lower_case_names, keep);
    };
    let mut spans = spans_as_written(&n.text, lower_case_names, keep);
    for s in &mut spans {
        s.start = n.orig_start(s.start);
        s.end = n.orig_end(s.end);
    }
    spans
}

/// [`spans`] of text that needs no normalisation.
fn spans_as_written(text: &str, lower_case_names: bool, keep: impl Fn(&Cand) -> bool) -> Vec<Span> {
    let mut scan = Scan::new(text);
    scan.recall = lower_case_names;
    candidates(&mut scan, lower_case_names);
    scan.finish(keep)
}

/// Runs every family over the scan's text, leaving the raw candidates in `scan.out`.
///
/// Web identifiers first, chunk by chunk (their insides look like names and numbers). The
/// other families then share one pass: at each token they are tried in priority order —
/// address, number, month-name date, name — and the first that takes something decides
/// where the pass goes on. Most tokens are lower-case words that no
/// family wants, and they cost a flag test.
fn candidates(scan: &mut Scan<'_>, lower_case_names: bool) {
    let text = scan.text;
    let n = scan.len();
    // Web identifiers first, in each chunk of glued tokens ("john.smith@example.com"): only
    // the chunks around the `@`, `:` and `.` tokens the lexer listed are looked at.
    web::chunks(scan);
    // Text written without capitals (chat messages often are) gets its lower-case words
    // checked against the name lists; in ordinary text only a title or a label does that.
    let lex::WordCounts { words, capitalised } = scan.counts;
    let lower_text = lower_case_names || (words >= 3 && capitalised * 50 < words);
    let mut i = 0;
    while i < n {
        let t = scan.toks[i];
        if t.flags & lex::USED != 0 {
            i += 1;
            continue;
        }
        let next = match t.kind {
            Kind::Num | Kind::AlNum => address::at(scan, i).or_else(|| numbers::at(scan, i)),
            // (The tests before the number and date families are the first ones they make.)
            // A place word ("FROM", "At") starts nothing; a place after one is looked for
            // before the address shapes, which would read "FROM SAUNDERS AT 0330" as a
            // city and a postal code.
            Kind::Word if t.is_cap() && places::is_cue(scan, i) => Some(i + 1),
            Kind::Word if t.is_cap() => places::at(scan, i)
                .or_else(|| address::at(scan, i))
                .or_else(|| {
                    (t.all_upper() && t.len() <= 5 && numbers::value_start_word(scan, i))
                        .then(|| numbers::at(scan, i))
                        .flatten()
                })
                .or_else(|| {
                    (t.len() >= 3 && scan.info_small(i).month() != 0)
                        .then(|| dates::at(scan, i))
                        .flatten()
                })
                .or_else(|| names::at(scan, i)),
            Kind::Word => {
                // Most lower-case words matter to no family: two cheap tests say so before
                // any lookup.
                let raw = &text.as_bytes()[t.start..t.end];
                let interesting = t.flags & lex::NON_ASCII != 0 || scan.dict.may_interest(raw);
                let mut next = None;
                if interesting || address::number_within(scan, i, 5) {
                    next = address::at(scan, i);
                }
                if next.is_none() && interesting && scan.info_small(i).month() != 0 {
                    next = dates::at(scan, i);
                }
                // `from sacred heart`, `at st. luke's`.
                if next.is_none() && places::lower_head(raw) {
                    next = places::at(scan, i);
                }
                // Past the first token, a line start and a title's dot both need punctuation
                // just before (the line-start test looks back across quoting marks only).
                let after_punct = i > 0 && scan.toks[i - 1].kind == Kind::Punct;
                if next.is_none()
                    && (i == 0 || t.gap >= Gap::Line || (after_punct && names::line_start(scan, i)))
                {
                    next = names::at(scan, i);
                }
                if next.is_none() && (lower_text || (after_punct && scan.after_title_dot(i))) {
                    next = names::lower_at(scan, i, 0.6, false);
                } else if next.is_none() && scan.after_role_word(i) {
                    // `patient john smith`, `wife zelda` in ordinary text.
                    next = names::lower_at(scan, i, 0.6, true);
                }
                next
            }
            Kind::Punct if t.ch == b'(' => numbers::at(scan, i),
            _ => None,
        };
        i = next.unwrap_or(i + 1).max(i + 1);
    }
    repeat_names(scan);
}

/// Once a document has named someone in full ("Patient: Max Monroe"), a later capitalised
/// "Max" or "Monroe" alone is that person, even where the word alone would be too
/// ambiguous ("Max agrees with the plan").
fn repeat_names(scan: &mut Scan<'_>) {
    // Most documents name no one in full: then there is nothing to look for, and the sets
    // are not even touched.
    if scan
        .out
        .iter()
        .any(|c| c.cat == Category::Person && c.score >= 0.7)
    {
        repeat_names_found(scan);
    }
}

/// [`repeat_names`] once someone is named in full.
// Kept out of line, so as not to crowd the pass's loop.
#[inline(never)]
fn repeat_names_found(scan: &mut Scan<'_>) {
    // The scratch space is borrowed field by field, beside the tokens and candidates, rather
    // than moved out and back (a few hundred bytes, per message with a name).
    let sc = &mut *scan.scratch;
    let known = &mut sc.known;
    known.clear();
    for c in &scan.out {
        if c.cat != Category::Person || c.score < 0.7 {
            continue;
        }
        // Words of a confirmed name, split on anything but letters ("SMITH, JOHN").
        let covered = scan.text.get(c.start..c.end).unwrap_or("");
        name_words(covered, &mut sc.name_words);
        if sc.name_words.len() > 1 {
            for &(a, b) in &sc.name_words {
                let word = covered.get(a..b).unwrap_or("");
                if word.len() <= 16 && word.is_ascii() {
                    // ASCII letters only: packed from the text as the dictionary packs them.
                    known.insert_packed(dict::pack_letters(
                        scan.text.as_bytes(),
                        c.start + a,
                        b - a,
                    ));
                } else {
                    known.insert(word, &mut sc.buf);
                }
            }
        }
    }
    if known.is_empty() {
        return;
    }
    // The set first: most words are not names of the document (the dictionary facts are
    // asked for only about those that are). Emitting marks only the token itself, so the
    // tokens are tested first and the candidates emitted after.
    let found = &mut sc.found;
    found.clear();
    let bytes = scan.text.as_bytes();
    for &i in &sc.titles {
        let Some(t) = scan.toks.get(i) else {
            continue;
        };
        if t.flags & lex::USED != 0 {
            continue;
        }
        let known_word = if t.flags & lex::NON_ASCII == 0 && t.len() <= 16 {
            known.contains_packed(dict::pack_letters(bytes, t.start, t.len()))
        } else {
            known.contains(dict::lower_into(
                scan.text.get(t.start..t.end).unwrap_or(""),
                &mut sc.buf,
            ))
        };
        if known_word {
            found.push(i);
        }
    }
    if found.is_empty() {
        return;
    }
    let found = std::mem::take(found);
    for &i in &found {
        if !scan.info_small(i).has(dict::FUNCTION | dict::TITLE) {
            scan.emit(i, i, Category::Person, 0.75);
        }
    }
    scan.scratch.found = found;
}

/// The words of a confirmed name's text `covered`, as byte ranges into `out` (cleared
/// first): each maximal run of letters ([`lex::is_alpha`]) two characters or more long. The
/// same as splitting on every character that is not a letter and dropping the pieces
/// shorter than two characters, in one pass that decodes only the non-ASCII characters.
fn name_words(covered: &str, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let b = covered.as_bytes();
    let mut i = 0;
    let mut start = 0;
    // Letters in the current run.
    let mut letters = 0;
    while let Some(&c) = b.get(i) {
        let (letter, len) = if c < 0x80 {
            (c.is_ascii_alphabetic(), 1)
        } else {
            let ch = covered
                .get(i..)
                .and_then(|r| r.chars().next())
                .unwrap_or(' ');
            (lex::is_alpha(ch), ch.len_utf8())
        };
        if letter {
            if letters == 0 {
                start = i;
            }
            letters += 1;
        } else {
            if letters > 1 {
                out.push((start, i));
            }
            letters = 0;
        }
        i += len;
    }
    if letters > 1 {
        out.push((start, b.len()));
    }
}

/// The lower-cased words of a document's full names: short ASCII ones packed into integers
/// (as the dictionary packs them), the rest as strings.
#[derive(Default)]
struct KnownWords {
    /// The packed words, in a list searched in order while there are at most
    /// [`OTHER_LINEAR`] (a name has a few words, and hashing each cost more than the search)…
    packed: Vec<u128>,
    /// … and all of them in a set past that; empty before.
    packed_set: HashSet<u128, dict::FxBuild>,
    /// One bit per packed word (a one-word Bloom filter): every title-case word of the
    /// document is tested, and most are not names of it, so most tests end here.
    packed_filter: u64,
    /// The other words, one after another (a document has few, and a string each, allocated
    /// and freed per document, cost more than the rest of this step)…
    other_text: String,
    /// … each ending where this says.
    other_ends: Vec<usize>,
    /// All the other words, once there are more than [`OTHER_LINEAR`]; empty before.
    other_set: HashSet<String, dict::FxBuild>,
}

/// How many words of a kind [`KnownWords`] searches one by one before it uses a set.
const OTHER_LINEAR: usize = 32;

/// The bit of `packed_filter` for packed word `k`.
fn filter_bit(k: u128) -> u64 {
    let h = ((k as u64) ^ ((k >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    1 << (h >> 58)
}

impl KnownWords {
    fn clear(&mut self) {
        self.packed.clear();
        if !self.packed_set.is_empty() {
            self.packed_set.clear();
        }
        self.packed_filter = 0;
        self.other_text.clear();
        self.other_ends.clear();
        if !self.other_set.is_empty() {
            self.other_set.clear();
        }
    }

    fn insert_packed(&mut self, k: u128) {
        if self.contains_packed(k) {
            return;
        }
        self.packed_filter |= filter_bit(k);
        self.packed.push(k);
        if self.packed.len() > OTHER_LINEAR {
            if self.packed_set.is_empty() {
                self.packed_set.extend(self.packed.iter().copied());
            } else {
                self.packed_set.insert(k);
            }
        }
    }

    fn contains_packed(&self, k: u128) -> bool {
        if self.packed_filter & filter_bit(k) == 0 {
            return false;
        }
        if self.packed.len() > OTHER_LINEAR {
            self.packed_set.contains(&k)
        } else {
            self.packed.contains(&k)
        }
    }

    fn is_empty(&self) -> bool {
        self.packed.is_empty() && self.other_ends.is_empty()
    }

    /// Whether the other (long or non-ASCII, lower-cased) word `lower` is known.
    fn contains_other(&self, lower: &str) -> bool {
        if self.other_ends.len() > OTHER_LINEAR {
            return self.other_set.contains(lower);
        }
        let mut from = 0;
        for &end in &self.other_ends {
            if self.other_text.get(from..end) == Some(lower) {
                return true;
            }
            from = end;
        }
        false
    }

    /// Adds the other (long or non-ASCII, lower-cased) word `lower`.
    fn insert_other(&mut self, lower: &str) {
        if self.contains_other(lower) {
            return;
        }
        self.other_text.push_str(lower);
        self.other_ends.push(self.other_text.len());
        if self.other_ends.len() > OTHER_LINEAR {
            if self.other_set.is_empty() {
                let mut from = 0;
                for &end in &self.other_ends {
                    let w = self.other_text.get(from..end).unwrap_or("");
                    self.other_set.insert(w.to_owned());
                    from = end;
                }
            } else {
                self.other_set.insert(lower.to_owned());
            }
        }
    }

    /// Adds `word`, lower-cased as `str::to_lowercase` does (`buf` is scratch space).
    fn insert(&mut self, word: &str, buf: &mut String) {
        if let Some(k) = dict::pack_lower(word.as_bytes()) {
            // ASCII: lower-cased by the packing.
            self.insert_packed(k);
            return;
        }
        // `str::to_lowercase` lower-cases character by character except that a capital
        // sigma ending a word becomes a final sigma: a word with one takes it, the rest are
        // lower-cased in `buf` without an allocation.
        let owned;
        let lower = if word.contains('Σ') {
            owned = word.to_lowercase();
            owned.as_str()
        } else {
            dict::lower_into(word, buf)
        };
        match dict::pack_lower(lower.as_bytes()) {
            Some(k) => self.insert_packed(k),
            None => self.insert_other(lower),
        }
    }

    /// Whether the lower-cased word `lower` is known.
    fn contains(&self, lower: &str) -> bool {
        match dict::pack_lower(lower.as_bytes()) {
            Some(k) => self.contains_packed(k),
            None => self.contains_other(lower),
        }
    }
}

/// Sorts candidates by start, longer first, keeping the order of equal ones (a stable
/// sort). The families emit nearly in order, so an insertion sort finishes in about one
/// pass; if it has to move much, the standard stable sort finishes the job (insertion
/// keeps equal elements in order too, so the result is the same).
fn sort_cands(c: &mut [Cand]) {
    let before = |a: &Cand, b: &Cand| a.start < b.start || (a.start == b.start && a.end > b.end);
    let mut budget = 4 * c.len() + 16;
    for r in 1..c.len() {
        let x = c[r];
        let mut w = r;
        while w > 0 && before(&x, &c[w - 1]) {
            c[w] = c[w - 1];
            w -= 1;
            budget = budget.saturating_sub(1);
        }
        c[w] = x;
        if budget == 0 {
            c.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
            return;
        }
    }
}

/// Sorts candidates and merges overlapping ones: the union of their bytes, the category of
/// the highest-scoring one (the earlier one on a tie).
fn merge(c: &mut Vec<Cand>) {
    sort_cands(c);
    // In place: the merged spans are written over the front of the vector (never ahead of
    // the one being read).
    let mut w = 0;
    for r in 0..c.len() {
        let x = c[r];
        if w > 0 {
            let last = &mut c[w - 1];
            if x.start < last.end {
                if x.score > last.score {
                    last.cat = x.cat;
                    last.score = x.score;
                }
                last.end = last.end.max(x.end);
                continue;
            }
        }
        c[w] = x;
        w += 1;
    }
    c.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_phrases_read_as_the_joined_lower_case_words() {
        let text =
            "in New  York, NORTH CAROLINA and Salt Lake City or Rio Grande do Sul, São Paulo";
        let mut scan = Scan::new(text);
        let words: Vec<usize> = (0..scan.len())
            .filter(|&i| scan.kind(i) == Some(Kind::Word))
            .collect();
        for (a, &from) in words.iter().enumerate() {
            for &to in &words[a..words.len().min(a + 4)] {
                let joined: Vec<String> = (from..=to).map(|i| scan.s(i).to_lowercase()).collect();
                let want = if (from..=to).all(|i| scan.kind(i) == Some(Kind::Word)) {
                    scan.dict.get(&joined.join(" "))
                } else {
                    WordInfo::default()
                };
                assert_eq!(scan.phrase_info(from, to), want, "{joined:?}");
            }
        }
        // Both paths were taken: short ASCII phrases are packed, a phrase over 16 bytes and a
        // non-ASCII one are not.
        assert!(scan.packed_phrase(words[1], words[2]).is_some());
        assert!(scan.phrase_info(words[1], words[2]).has(dict::STATE));
        assert!(scan.phrase_info(words[3], words[4]).has(dict::STATE));
        let sao = words[words.len() - 2];
        assert!(scan.packed_phrase(sao, sao + 1).is_none());
        assert!(scan.packed_phrase(words[10], words[13]).is_none());
    }
}
