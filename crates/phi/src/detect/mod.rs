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
mod web;

use std::collections::HashSet;

use crate::Category;
use crate::dict::{self, Ctx, Dict, WordInfo};
use crate::lex::{self, Gap, Kind, Tok};

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

/// The reusable buffers of a scan.
#[derive(Default)]
struct Buffers {
    toks: Vec<Tok>,
    infos: Vec<WordInfo>,
    have_info: Vec<u8>,
    used: Vec<bool>,
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
    infos: Vec<WordInfo>,
    /// 0: not looked up; 1: looked up in the small table; 2: in the full one.
    have_info: Vec<u8>,
    /// Tokens already inside a candidate of an earlier family.
    pub used: Vec<bool>,
    pub out: Vec<Cand>,
    buf: String,
    phrase: String,
}

impl<'t> Scan<'t> {
    /// A scan of `text`, reusing the buffers of the previous scan on this thread: the
    /// gateway calls this for every message, most of them short, where allocating five
    /// vectors would cost as much as the detection.
    pub fn new(text: &'t str) -> Self {
        let mut b = POOL.with(|p| p.take()).unwrap_or_default();
        lex::lex_into(text, &mut b.toks);
        let n = b.toks.len();
        // Facts are looked up lazily, word by word, when a family asks; tokens that are not
        // words have none.
        b.infos.clear();
        b.infos.resize(n, WordInfo::default());
        b.have_info.clear();
        b.have_info.extend(
            b.toks
                .iter()
                .map(|t| if t.kind == Kind::Word { 0 } else { 2 }),
        );
        b.used.clear();
        b.used.resize(n, false);
        Scan {
            text,
            toks: b.toks,
            dict: dict::dict(),
            infos: b.infos,
            have_info: b.have_info,
            used: b.used,
            out: Vec::new(),
            buf: b.buf,
            phrase: b.phrase,
        }
    }

    /// Ends the scan: returns the candidates and gives the buffers back to the thread's
    /// pool (large ones are dropped rather than kept).
    fn finish(self) -> Vec<Cand> {
        if self.toks.capacity() <= 1 << 16 {
            let b = Buffers {
                toks: self.toks,
                infos: self.infos,
                have_info: self.have_info,
                used: self.used,
                buf: self.buf,
                phrase: self.phrase,
            };
            POOL.with(|p| p.set(Some(b)));
        }
        self.out
    }

    pub fn len(&self) -> usize {
        self.toks.len()
    }

    /// The token's text.
    pub fn s(&self, i: usize) -> &'t str {
        match self.toks.get(i) {
            Some(t) => self.text.get(t.start..t.end).unwrap_or(""),
            None => "",
        }
    }

    pub fn tok(&self, i: usize) -> Option<&Tok> {
        self.toks.get(i)
    }

    /// Dictionary facts about word token `i`, looked up once: everything for a capitalised
    /// word, only the context lists for a lower-case one (see [`Scan::info_full`]).
    pub fn info(&mut self, i: usize) -> WordInfo {
        let full = self.toks.get(i).is_some_and(Tok::is_cap);
        self.lookup(i, if full { 2 } else { 1 })
    }

    /// Only the context-list facts about word token `i` (cheap, even for a capitalised
    /// word): enough to test for a street prefix, a unit, a title or a keyword.
    pub fn info_small(&mut self, i: usize) -> WordInfo {
        self.lookup(i, 1)
    }

    /// Everything the dictionary knows about word token `i`, whatever its case.
    pub fn info_full(&mut self, i: usize) -> WordInfo {
        self.lookup(i, 2)
    }

    #[inline]
    fn lookup(&mut self, i: usize, level: u8) -> WordInfo {
        // The common case, a word already looked up, stays inline; the dictionary is asked
        // out of line.
        match self.have_info.get(i) {
            Some(&have) if have >= level => self.infos[i],
            Some(_) => self.lookup_slow(i, level),
            None => WordInfo::default(),
        }
    }

    #[inline(never)]
    fn lookup_slow(&mut self, i: usize, level: u8) -> WordInfo {
        let Some(t) = self.toks.get(i) else {
            return WordInfo::default();
        };
        if t.kind != Kind::Word {
            return WordInfo::default();
        }
        let s = self.text.get(t.start..t.end).unwrap_or("");
        let info = match self.dict.get_raw(s.as_bytes(), level == 1) {
            Some(info) => info,
            None if t.len() > 40 => WordInfo::default(),
            None => {
                let lower = dict::lower_into(s, &mut self.buf);
                if level == 2 {
                    self.dict.get(lower)
                } else {
                    self.dict.get_small(lower)
                }
            }
        };
        self.infos[i] = info;
        self.have_info[i] = level;
        info
    }

    /// Looks up a multi-word phrase (tokens `from..=to` joined by single spaces).
    pub fn phrase_info(&mut self, from: usize, to: usize) -> WordInfo {
        let mut key = std::mem::take(&mut self.phrase);
        key.clear();
        for i in from..=to {
            let Some(t) = self.toks.get(i) else {
                return WordInfo::default();
            };
            if t.kind != Kind::Word {
                return WordInfo::default();
            }
            if i > from {
                key.push(' ');
            }
            let s = self.text.get(t.start..t.end).unwrap_or("");
            key.push_str(dict::lower_into(s, &mut self.buf));
        }
        let info = self.dict.get(&key);
        self.phrase = key;
        info
    }

    /// Whether token `i` is the lower-cased word `w` (ASCII).
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

    pub fn is_punct(&self, i: usize, c: u8) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_punct(c))
    }

    pub fn kind(&self, i: usize) -> Option<Kind> {
        self.toks.get(i).map(|t| t.kind)
    }

    pub fn gap(&self, i: usize) -> Gap {
        self.toks.get(i).map_or(Gap::Para, |t| t.gap)
    }

    pub fn start(&self, i: usize) -> usize {
        self.toks.get(i).map_or(self.text.len(), |t| t.start)
    }

    pub fn end(&self, i: usize) -> usize {
        self.toks.get(i).map_or(self.text.len(), |t| t.end)
    }

    /// Records a candidate over tokens `from..=to` and marks them used.
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
            for u in self.used.iter_mut().take(to + 1).skip(from) {
                *u = true;
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
        for i in first..self.toks.len() {
            if self.toks[i].start >= end {
                break;
            }
            self.used[i] = true;
        }
    }

    pub fn is_used(&self, i: usize) -> bool {
        self.used.get(i).copied().unwrap_or(true)
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
                let s = self.s(i);
                if (s == "N" || s == "n")
                    && self.is_punct(i.wrapping_sub(1), b'/')
                    && (self.is(i.wrapping_sub(2), "s"))
                {
                    return Ctx::Device;
                }
                if s == "MR" && (self.is_punct(i + 1, b'#') || self.is_punct(i + 1, b':')) {
                    return Ctx::Mrn;
                }
                // "medical record (number)", "health record".
                if (s.eq_ignore_ascii_case("record") || s.eq_ignore_ascii_case("records"))
                    && i > 0
                    && (self.is(i - 1, "medical") || self.is(i - 1, "health"))
                {
                    return Ctx::Mrn;
                }
                if (s.eq_ignore_ascii_case("no") || s.eq_ignore_ascii_case("nr"))
                    && self.is_punct(i + 1, b'.')
                    && t.is_cap()
                {
                    return Ctx::Id;
                }
                Ctx::None
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
            Kind::Punct => b":#-.()=,;/*[]>".contains(&t.ch),
            Kind::Word => self.info_small(i).has(dict::FILLER) || t.len() == 1,
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

    /// Whether token `i` starts a sentence or a line (so its capital says nothing).
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

/// Runs every family over `text` and returns the raw candidates.
///
/// Web identifiers first, chunk by chunk (their insides look like names and numbers). The
/// other families then share one pass: at each token they are tried in priority order —
/// address, number, month-name date, name — and the first that takes something decides
/// where the pass goes on. Most tokens are lower-case words that no
/// family wants, and they cost a flag test.
pub(crate) fn candidates(text: &str) -> Vec<Cand> {
    let mut scan = Scan::new(text);
    let n = scan.len();
    // Web identifiers first, in each chunk of glued tokens ("john.smith@example.com"): a
    // quick test of the chunk's bytes rules most chunks out.
    for i in 0..n {
        let starts_chunk = i == 0 || scan.toks[i].gap != Gap::None;
        if starts_chunk && scan.gap(i + 1) == Gap::None {
            web::chunk_at(&mut scan, i);
        }
    }
    // Text written without capitals (chat messages often are) gets its lower-case words
    // checked against the name lists; in ordinary text only a title or a label does that.
    let words = scan.toks.iter().filter(|t| t.kind == Kind::Word).count();
    let capitalised = scan
        .toks
        .iter()
        .filter(|t| t.kind == Kind::Word && t.is_cap())
        .count();
    let lower_text = words >= 3 && capitalised * 50 < words;
    let mut i = 0;
    while i < n {
        if scan.used[i] {
            i += 1;
            continue;
        }
        let t = scan.toks[i];
        let next = match t.kind {
            Kind::Num | Kind::AlNum => {
                address::at(&mut scan, i).or_else(|| numbers::at(&mut scan, i))
            }
            Kind::Word if t.is_cap() => address::at(&mut scan, i)
                .or_else(|| numbers::at(&mut scan, i))
                .or_else(|| dates::at(&mut scan, i))
                .or_else(|| names::at(&mut scan, i)),
            Kind::Word => {
                // Most lower-case words matter to no family: two cheap tests say so before
                // any lookup.
                let raw = &text.as_bytes()[t.start..t.end];
                let interesting = t.flags & lex::NON_ASCII != 0 || scan.dict.may_interest(raw);
                let mut next = None;
                if interesting || address::number_within(&scan, i, 5) {
                    next = address::at(&mut scan, i);
                }
                if next.is_none() && interesting && scan.info_small(i).month != 0 {
                    next = dates::at(&mut scan, i);
                }
                if next.is_none() && names::line_start(&scan, i) {
                    next = names::at(&mut scan, i);
                }
                if next.is_none() && (lower_text || scan.after_title_dot(i)) {
                    next = names::lower_at(&mut scan, i, 0.6);
                }
                next
            }
            Kind::Punct if t.ch == b'(' => numbers::at(&mut scan, i),
            _ => None,
        };
        i = next.unwrap_or(i + 1).max(i + 1);
    }
    repeat_names(&mut scan);
    scan.finish()
}

/// Once a document has named someone in full ("Patient: Max Monroe"), a later capitalised
/// "Max" or "Monroe" alone is that person, even where the word alone would be too
/// ambiguous ("Max agrees with the plan").
fn repeat_names(scan: &mut Scan<'_>) {
    let mut known: HashSet<String, dict::FxBuild> = HashSet::default();
    for c in &scan.out {
        if c.cat != Category::Person || c.score < 0.7 {
            continue;
        }
        // Words of a confirmed name, split on anything but letters ("SMITH, JOHN").
        let covered = scan.text.get(c.start..c.end).unwrap_or("");
        let parts: Vec<&str> = covered
            .split(|ch: char| !ch.is_alphabetic())
            .filter(|w| w.chars().count() > 1)
            .collect();
        if parts.len() >= 2 {
            known.extend(parts.iter().map(|w| w.to_lowercase()));
        }
    }
    if known.is_empty() {
        return;
    }
    let mut buf = String::new();
    for i in 0..scan.len() {
        let t = scan.toks[i];
        if t.kind != Kind::Word || !t.is_title() || scan.used[i] {
            continue;
        }
        if scan.info_small(i).has(dict::FUNCTION | dict::TITLE) {
            continue;
        }
        let lower = dict::lower_into(scan.s(i), &mut buf);
        if known.contains(lower) {
            scan.emit(i, i, Category::Person, 0.75);
        }
    }
}

/// Sorts candidates and merges overlapping ones: the union of their bytes, the category of
/// the highest-scoring one (the earlier one on a tie).
pub(crate) fn merge(mut c: Vec<Cand>) -> Vec<Cand> {
    c.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Cand> = Vec::with_capacity(c.len());
    for x in c {
        if let Some(last) = out.last_mut()
            && x.start < last.end
        {
            if x.score > last.score {
                last.cat = x.cat;
                last.score = x.score;
            }
            last.end = last.end.max(x.end);
            continue;
        }
        out.push(x);
    }
    out
}
