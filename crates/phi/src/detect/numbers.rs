//! Identifiers made of digits, or of letters and digits: values claimed by a keyword before
//! them (`MRN: 00482913`, `Member ID XGH123456789`), and values recognised by shape and
//! checked where the format allows (SSN, payment card, phone and fax, numeric dates, IPv4,
//! ZIP after a state, ages over 89, VIN, IBAN, DEA, Medicare MBI, GS1 UDI).
//!
//! Digit groups are first gathered into a sequence (`+41 (0)69 979 80 58`, `4/14/1962`,
//! `123-45-6789`) and the longest prefix that some shape accepts wins; unmatched groups are
//! retried on their own.

use super::{Scan, web, word8, words8};
use crate::Category;
use crate::checks;
use crate::dict::{self, Ctx};
use crate::lex::{Gap, Kind};

#[derive(Clone, Copy, Debug, Default)]
struct Group {
    tok: usize,
    start: usize,
    /// End of the digits (before an `x123` extension).
    end: usize,
    /// End of the token, extension included.
    tok_end: usize,
    /// The separator before this group: `-`, `.`, `/`, ` `, `)` or `(`; 0 for the first.
    sep: u8,
}

const MAX_GROUPS: usize = 8;

struct Seq {
    groups: [Group; MAX_GROUPS],
    n: usize,
    /// Byte where the sequence starts (a leading `+` or `(` included).
    start: usize,
    plus: bool,
    paren: bool,
}

impl Seq {
    /// The digits of the first `k` groups, on the stack when they are few (they always
    /// are where a check digit is computed).
    fn digits(&self, b: &[u8], k: usize) -> Digits {
        let total: usize = self.groups[..k].iter().map(|g| g.end - g.start).sum();
        if total > DIGITS_INLINE {
            let mut d = Vec::with_capacity(total);
            for g in &self.groups[..k] {
                d.extend_from_slice(&b[g.start..g.end]);
            }
            return Digits::Heap(d);
        }
        let mut buf = [0u8; DIGITS_INLINE];
        let mut n = 0;
        for g in &self.groups[..k] {
            let d = &b[g.start..g.end];
            buf[n..n + d.len()].copy_from_slice(d);
            n += d.len();
        }
        Digits::Inline(buf, n)
    }
    fn len(&self, i: usize) -> usize {
        self.groups[i].end - self.groups[i].start
    }
    fn val(&self, b: &[u8], i: usize) -> u32 {
        let g = &self.groups[i];
        b[g.start..g.end]
            .iter()
            .take(9)
            .fold(0, |a, &c| a * 10 + u32::from(c - b'0'))
    }
    fn seps_all(&self, k: usize, c: u8) -> bool {
        self.groups[1..k].iter().all(|g| g.sep == c)
    }
}

const DIGITS_INLINE: usize = 32;

/// The digits of a sequence's first groups.
enum Digits {
    Inline([u8; DIGITS_INLINE], usize),
    Heap(Vec<u8>),
}

impl std::ops::Deref for Digits {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Digits::Inline(buf, n) => buf.get(..*n).unwrap_or_default(),
            Digits::Heap(v) => v,
        }
    }
}

/// `5272x565`: digits, then `x` or `ext`, then digits. Returns where the digits end.
fn extension_split(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let d = b.iter().position(|c| !c.is_ascii_digit())?;
    let rest = &s[d..];
    let tail = rest
        .strip_prefix("ext")
        .or_else(|| rest.strip_prefix('x'))
        .or_else(|| rest.strip_prefix('X'))?;
    (d > 0 && !tail.is_empty() && tail.bytes().all(|c| c.is_ascii_digit())).then_some(d)
}

/// A number or identifier starting at token `i`. Returns the token to go on from when it
/// took (or deliberately skipped) something.
pub(super) fn at(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    match t.kind {
        Kind::Num | Kind::AlNum => value_at(scan, i),
        Kind::Word if t.all_upper() && t.len() <= 5 && value_start_word(scan, i) => {
            value_at(scan, i)
        }
        Kind::Punct if t.ch == b'(' && scan.s(i + 1) == "01" => udi(scan, i),
        _ => None,
    }
}

/// An upper-case word glued by `-` or `#` to digits (`ABC-1234`): a value, after a keyword.
pub(super) fn value_start_word(scan: &Scan<'_>, i: usize) -> bool {
    scan.toks
        .get(i)
        .is_some_and(|t| t.all_upper() && t.len() <= 5)
        && (scan.is_punct(i + 1, b'-') || scan.is_punct(i + 1, b'#'))
        && scan.gap(i + 1) == Gap::None
        && scan.gap(i + 2) == Gap::None
        && matches!(scan.kind(i + 2), Some(Kind::Num | Kind::AlNum))
}

/// Handles the value that starts at token `i`; returns the next token to look at.
fn value_at(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let ctx = scan.ctx_before(i);
    if ctx.claims_value()
        && let Some(next) = claim(scan, i, ctx)
    {
        return Some(next);
    }
    match scan.kind(i) {
        Some(Kind::AlNum) => alnum(scan, i, ctx),
        Some(Kind::Num) => digits(scan, i, ctx),
        _ => None,
    }
}

/// The category a claiming keyword gives its value.
fn claim_category(ctx: Ctx) -> Category {
    match ctx {
        Ctx::Mrn => Category::Mrn,
        Ctx::HealthPlan => Category::HealthPlan,
        Ctx::Account => Category::Account,
        Ctx::License | Ctx::Npi | Ctx::Dea => Category::License,
        Ctx::Vin | Ctx::Plate => Category::Vehicle,
        Ctx::Device | Ctx::Imei => Category::Device,
        Ctx::Biometric => Category::Biometric,
        _ => Category::Id,
    }
}

/// Takes the identifier-like value at token `i` for the keyword's category: tokens glued by
/// `-`, `/`, `.` or `:`, and for some keywords digit groups separated by single spaces.
fn claim(scan: &mut Scan<'_>, i: usize, ctx: Ctx) -> Option<usize> {
    let b = scan.text.as_bytes();
    let spaced_ok = matches!(
        ctx,
        Ctx::Account | Ctx::HealthPlan | Ctx::Plate | Ctx::Id | Ctx::Mrn | Ctx::License
    );
    let mut k = i;
    loop {
        let glued_sep = scan.gap(k + 1) == Gap::None
            && scan.gap(k + 2) == Gap::None
            && [b'-', b'/', b'.', b':']
                .iter()
                .any(|&c| scan.is_punct(k + 1, c))
            && matches!(scan.kind(k + 2), Some(Kind::Num | Kind::AlNum | Kind::Word));
        if glued_sep && !(scan.kind(k + 2) == Some(Kind::Word) && scan.toks[k + 2].is_lower()) {
            k += 2;
            continue;
        }
        let spaced = spaced_ok
            && scan.gap(k + 1) == Gap::Space
            && scan.kind(k) != Some(Kind::Word)
            && matches!(scan.kind(k + 1), Some(Kind::Num | Kind::AlNum))
            && scan.toks[k].len() >= 2
            && scan.toks[k + 1].len() >= 2
            && scan.end(k + 1) - scan.start(i) <= 24
            && !scan.is_used(k + 1);
        if spaced {
            k += 1;
            continue;
        }
        break;
    }
    let (start, end) = (scan.start(i), scan.end(k));
    let value = &b[start..end];
    if value.len() > 64 {
        return None;
    }
    let mut digit_buf = [0u8; 64];
    let mut alnum_buf = [0u8; 64];
    let (mut nd, mut na) = (0, 0);
    for &c in value {
        if c.is_ascii_digit() {
            digit_buf[nd] = c;
            nd += 1;
        }
        if c.is_ascii_alphanumeric() {
            alnum_buf[na] = c;
            na += 1;
        }
    }
    let digits = &digit_buf[..nd];
    let alnum = &alnum_buf[..na];
    let min_len = if ctx == Ctx::Plate { 3 } else { 4 };
    if alnum.len() < min_len || digits.is_empty() || (ctx == Ctx::Id && digits.len() < 3) {
        return None;
    }
    // A year alone after "since" or "ID" is not an identifier.
    if value.len() == 4
        && digits.len() == 4
        && (1900..=2099).contains(
            &alnum
                .iter()
                .fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')),
        )
        && ctx == Ctx::Id
    {
        return None;
    }
    let mut cat = claim_category(ctx);
    let mut score = if ctx == Ctx::Id { 0.75 } else { 0.85 };
    if digits.len() == alnum.len() && (13..=19).contains(&digits.len()) && checks::luhn(digits) {
        cat = if ctx == Ctx::Imei {
            Category::Device
        } else {
            Category::CreditCard
        };
        score = 0.9;
    } else if checks::iban(alnum) {
        cat = Category::Iban;
        score = 0.95;
    } else if ctx == Ctx::Npi || ctx == Ctx::Dea || ctx == Ctx::Imei {
        // Always check-digited where issued: a value that fails is a typo or not one, and
        // is not reported (VINs are not here: most non-North-American ones have no check
        // digit, so a labelled VIN is taken as it is).
        let valid = match ctx {
            Ctx::Npi => checks::npi(digits),
            Ctx::Dea => checks::dea(alnum),
            _ => digits.len() == alnum.len() && checks::luhn(digits),
        };
        if !valid {
            return Some(k + 1);
        }
        score = 0.95;
    }
    scan.emit(i, k, cat, score);
    Some(k + 1)
}

/// Gathers the digit-group sequence that starts at Num token `i`.
fn gather(scan: &Scan<'_>, i: usize, seq: &mut Seq) {
    seq.n = 0;
    seq.start = scan.start(i);
    seq.plus = false;
    seq.paren = false;
    if i > 0 && scan.gap(i) == Gap::None {
        if scan.is_punct(i - 1, b'(') {
            seq.paren = true;
            seq.start = scan.start(i - 1);
            if i > 1 && scan.is_punct(i - 2, b'+') && scan.gap(i - 1) == Gap::None {
                seq.plus = true;
                seq.start = scan.start(i - 2);
            }
        } else if scan.is_punct(i - 1, b'+') {
            seq.plus = true;
            seq.start = scan.start(i - 1);
        }
    }
    let push = |seq: &mut Seq, k: usize, sep: u8| -> bool {
        let t = &scan.toks[k];
        let end = match t.kind {
            Kind::Num => t.end,
            Kind::AlNum => match extension_split(scan.s(k)) {
                Some(d) => t.start + d,
                None => return false,
            },
            _ => return false,
        };
        if seq.n >= MAX_GROUPS || scan.is_used(k) {
            return false;
        }
        seq.groups[seq.n] = Group {
            tok: k,
            start: t.start,
            end,
            tok_end: t.end,
            sep,
        };
        seq.n += 1;
        true
    };
    if !push(seq, i, 0) {
        return;
    }
    let mut k = i;
    loop {
        if scan.kind(k) == Some(Kind::AlNum) {
            break; // an extension ends the number
        }
        let nk = k + 1;
        let Some(&t) = scan.tok(nk) else { break };
        let (next, sep) = match t.kind {
            Kind::Num | Kind::AlNum if t.gap == Gap::Space => (nk, b' '),
            Kind::Punct
                if t.gap == Gap::None
                    && matches!(t.ch, b'-' | b'.' | b'/')
                    && scan.gap(nk + 1) == Gap::None =>
            {
                (nk + 1, t.ch)
            }
            Kind::Punct if t.ch == b')' && t.gap == Gap::None && scan.gap(nk + 1) <= Gap::Space => {
                (nk + 1, b')')
            }
            Kind::Punct
                if t.ch == b'('
                    && t.gap == Gap::Space
                    && scan.gap(nk + 1) == Gap::None
                    && scan.is_punct(nk + 2, b')') =>
            {
                (nk + 1, b'(')
            }
            _ => break,
        };
        if !push(seq, next, sep) {
            break;
        }
        k = next;
    }
}

/// A shape that matched the first `k` groups.
struct Match {
    k: usize,
    cat: Category,
    score: f32,
}

fn digits(scan: &mut Scan<'_>, i: usize, ctx: Ctx) -> Option<usize> {
    let b = scan.text.as_bytes();
    if web::dashed_mac(b, scan.start(i)) {
        let s = scan.start(i);
        scan.emit_bytes(s, s + 17, Category::Device, 0.9);
        return None;
    }
    if let Some(next) = spaced_out(scan, i, ctx) {
        return Some(next);
    }
    let mut seq = Seq {
        groups: [Group::default(); MAX_GROUPS],
        n: 0,
        start: 0,
        plus: false,
        paren: false,
    };
    gather(scan, i, &mut seq);
    if seq.n == 0 {
        return None;
    }
    // A dotted run longer than an IPv4 address (a version, an OID) is none of ours, and no
    // part of it is either.
    // French phone numbers (01.84.17.61.18) are the exception: pairs of digits.
    let pairs = (0..seq.n).all(|g| seq.len(g) == 2);
    if seq.n > 4 && seq.seps_all(seq.n, b'.') && !pairs && !matches!(ctx, Ctx::Phone | Ctx::Fax) {
        return Some(seq.groups[seq.n - 1].tok + 1);
    }
    // Grouped like a payment card (4-4-4-4, 4-6-5) but failing Luhn: not a card, and its
    // first groups are not a phone number either.
    if seq.n >= 3 && !seq.plus && !seq.paren {
        let n = seq.n;
        let mut lens_buf = [0usize; MAX_GROUPS];
        for (g, l) in lens_buf.iter_mut().enumerate().take(n) {
            *l = seq.len(g);
        }
        let lens = &lens_buf[..n];
        let sep = seq.groups[1].sep;
        let card_like = seq.seps_all(n, sep)
            && matches!(sep, b' ' | b'-')
            && (lens.iter().all(|&l| l == 4) && n >= 4 || lens == [4, 6, 5] || lens == [4, 6, 4]);
        if card_like && !checks::luhn(&seq.digits(b, n)) {
            return Some(seq.groups[n - 1].tok + 1);
        }
    }
    for k in (1..=seq.n).rev() {
        if let Some(m) = classify(scan, &seq, k, ctx) {
            let last = seq.groups[m.k - 1];
            let mut end = last.tok_end;
            let start = if m.cat == Category::Phone || m.cat == Category::Fax {
                end = phone_extension(scan, last.tok, end);
                seq.start
            } else {
                seq.groups[0].start
            };
            if m.cat == Category::Date {
                end = time_after(scan, last.tok).unwrap_or(end);
            }
            scan.emit_bytes(start, end, m.cat, m.score);
            // A weak guess (a bare digit group that might be a phone) lets the address and
            // date families still look at the following tokens.
            return (m.score >= super::WEAK).then_some(last.tok + 1);
        }
    }
    None
}

/// An SSN or a phone number written with spaces between its digits or around its dashes
/// (`4 5 7 5 5 5 4 6 2`, `4 5 7 - 5 5 - 5 4 6 2`, `457 - 55 - 5462`): what a person reads as
/// one number, which the digit-group shapes do not take. Starts at Num token `i`; returns
/// the token after the number when it took one.
fn spaced_out(scan: &mut Scan<'_>, i: usize, ctx: Ctx) -> Option<usize> {
    // The cheap test first: a single digit followed by a spaced digit or a spaced dash.
    let spaced_next = |scan: &Scan<'_>, k: usize| {
        scan.gap(k + 1) == Gap::Space
            && (scan.kind(k + 1) == Some(Kind::Num) || scan.is_punct(k + 1, b'-'))
    };
    let first_len = scan.toks.get(i)?.len();
    if !(spaced_next(scan, i) && (first_len == 1 || scan.is_punct(i + 1, b'-'))) {
        return None;
    }
    let b = scan.text.as_bytes();
    let mut digits = [0u8; 16];
    let mut n = 0;
    let (mut groups, mut singles, mut spaced_dashes) = (0, 0, 0);
    let mut k = i;
    let mut last;
    loop {
        let t = *scan.tok(k)?;
        if t.kind != Kind::Num || t.len() > 4 || scan.is_used(k) || n + t.len() > digits.len() {
            return None;
        }
        digits[n..n + t.len()].copy_from_slice(b.get(t.start..t.end)?);
        n += t.len();
        groups += 1;
        if t.len() == 1 {
            singles += 1;
        }
        last = k;
        let nk = k + 1;
        if scan.kind(nk) == Some(Kind::Num) && scan.gap(nk) == Gap::Space {
            k = nk;
        } else if scan.is_punct(nk, b'-')
            && scan.kind(nk + 1) == Some(Kind::Num)
            && scan.gap(nk) <= Gap::Space
            && scan.gap(nk + 1) <= Gap::Space
        {
            if scan.gap(nk) == Gap::Space || scan.gap(nk + 1) == Gap::Space {
                spaced_dashes += 1;
            }
            k = nk + 1;
        } else {
            break;
        }
    }
    // Mostly single digits, or groups joined by spaced dashes: otherwise the digit-group
    // shapes decide (`457 55 5462`, `617 555 0143`).
    if groups < 3 || !(singles * 2 >= groups || spaced_dashes > 0) {
        return None;
    }
    let d = &digits[..n];
    let (cat, score) = match n {
        9 if checks::ssn(&d[..3], &d[3..5], &d[5..]) => {
            (Category::Ssn, if ctx == Ctx::Ssn { 0.95 } else { 0.85 })
        }
        10 if !matches!(d[0], b'0' | b'1') => (Category::Phone, 0.7),
        11 if d[0] == b'1' => (Category::Phone, 0.7),
        _ => return None,
    };
    let score = match (cat, ctx) {
        (Category::Phone, Ctx::Phone | Ctx::Fax) => 0.9,
        _ => score,
    };
    let cat = if cat == Category::Phone && ctx == Ctx::Fax {
        Category::Fax
    } else {
        cat
    };
    scan.emit(i, last, cat, score);
    Some(last + 1)
}

/// `ext. 123` or `x123` after a phone number.
fn phone_extension(scan: &Scan<'_>, last: usize, end: usize) -> usize {
    let j = last + 1;
    if scan.gap(j) > Gap::Space || scan.kind(last) == Some(Kind::AlNum) {
        return end;
    }
    let s = scan.s(j);
    if scan.kind(j) == Some(Kind::AlNum) {
        let tail = s
            .strip_prefix("ext")
            .or_else(|| s.strip_prefix('x'))
            .or_else(|| s.strip_prefix('X'));
        return match tail {
            Some(t) if !t.is_empty() && t.len() <= 5 && t.bytes().all(|c| c.is_ascii_digit()) => {
                scan.end(j)
            }
            _ => end,
        };
    }
    if s.eq_ignore_ascii_case("x") || s.eq_ignore_ascii_case("ext") {
        let n = if scan.is_punct(j + 1, b'.') {
            j + 2
        } else {
            j + 1
        };
        if scan.kind(n) == Some(Kind::Num) && scan.toks[n].len() <= 5 && scan.gap(n) <= Gap::Space {
            return scan.end(n);
        }
    }
    end
}

/// A time of day right after a date (`1980-07-28 19:49:46`), to redact with it.
fn time_after(scan: &Scan<'_>, last: usize) -> Option<usize> {
    let h = last + 1;
    if scan.kind(h) != Some(Kind::Num) || scan.gap(h) != Gap::Space || scan.toks[h].len() > 2 {
        return None;
    }
    let mut j = h;
    let mut parts = 0;
    while scan.is_punct(j + 1, b':')
        && scan.gap(j + 1) == Gap::None
        && scan.kind(j + 2) == Some(Kind::Num)
        && scan.toks[j + 2].len() == 2
    {
        j += 2;
        parts += 1;
    }
    (parts > 0).then(|| scan.end(j))
}

fn month_day_ok(m: u32, d: u32) -> bool {
    (1..=12).contains(&m) && (1..=31).contains(&d)
}

fn year_ok(y: u32, len: usize) -> bool {
    match len {
        4 => (1800..=2199).contains(&y),
        2 => true,
        _ => false,
    }
}

fn classify(scan: &mut Scan<'_>, seq: &Seq, k: usize, ctx: Ctx) -> Option<Match> {
    let b = scan.text.as_bytes();
    let mut lens_buf = [0usize; MAX_GROUPS];
    for (g, l) in lens_buf.iter_mut().enumerate().take(k) {
        *l = seq.len(g);
    }
    let lens = &lens_buf[..k];
    let sep = if k > 1 { seq.groups[1].sep } else { 0 };
    let same_sep = k > 1 && seq.seps_all(k, sep);
    let m = |cat, score| Some(Match { k, cat, score });

    // IPv4: four dotted octets, not part of a longer dotted run.
    if k == 4 && same_sep && sep == b'.' && lens.iter().all(|&l| l <= 3) {
        let longer = seq.n > 4 && seq.groups[4].sep == b'.';
        if !longer && (0..4).all(|g| seq.val(b, g) <= 255) && !seq.plus && !seq.paren {
            return m(Category::IpAddress, 0.9);
        }
        return None;
    }

    // SSN: 3-2-4. Impossible numbers are rejected outright, not retried as something else.
    if k == 3 && same_sep && lens == [3, 2, 4] && matches!(sep, b'-' | b' ' | b'.') {
        let g = |x: usize| &b[seq.groups[x].start..seq.groups[x].end];
        if !checks::ssn(g(0), g(1), g(2)) {
            return None;
        }
        let score = match (sep, ctx) {
            (_, Ctx::Ssn) => 0.98,
            (b'-', _) => 0.95,
            _ => 0.8,
        };
        return m(Category::Ssn, score);
    }
    if k == 1 && lens[0] == 9 && ctx == Ctx::Ssn {
        let d = seq.digits(b, 1);
        if checks::ssn(&d[0..3], &d[3..5], &d[5..9]) {
            return m(Category::Ssn, 0.95);
        }
    }

    // Numeric dates.
    if let Some(score) = numeric_date(scan, seq, k, lens, sep, same_sep, ctx) {
        return m(Category::Date, score);
    }
    if k >= 2 && (sep == b'/' || (same_sep && sep == b'.' && k == 2)) {
        // Slashed or decimal numbers that are not dates (`120/80`, `3.5`) are nothing else.
        return None;
    }

    // Payment cards: 13–19 digits in one run or in the usual groupings, Luhn-valid.
    let total: usize = lens.iter().sum();
    let card_shape = k == 1
        || (same_sep
            && matches!(sep, b' ' | b'-')
            && (lens.iter().all(|&l| l == 4)
                || lens == [4, 6, 5]
                || lens == [4, 6, 4]
                || (lens.len() == 5 && lens[..4].iter().all(|&l| l == 4) && lens[4] <= 3)));
    if card_shape && !seq.plus && !seq.paren {
        let card_ctx = matches!(ctx, Ctx::Card | Ctx::Account);
        if ((13..=19).contains(&total) || (total == 12 && card_ctx))
            && checks::luhn(&seq.digits(b, k))
        {
            return m(Category::CreditCard, if card_ctx { 0.95 } else { 0.9 });
        }
        if k == 1 && (12..=19).contains(&total) && card_ctx {
            // A card number that fails Luhn is a typo or not a card: not reported as one.
            return None;
        }
    }

    // ZIP codes after a ZIP keyword, a state code or a state name.
    if k <= 2 && !seq.plus && !seq.paren {
        let zip_shape = (k == 1 && lens[0] == 5) || (k == 2 && sep == b'-' && lens == [5, 4]);
        if ctx == Ctx::Zip && (zip_shape || (3..=9).contains(&total)) {
            return m(Category::ZipCode, 0.9);
        }
        if zip_shape && after_state(scan, seq.groups[0].tok) {
            return m(Category::ZipCode, 0.9);
        }
    }

    // Ages over 89.
    if k == 1 && (2..=3).contains(&lens[0]) {
        let v = seq.val(b, 0);
        if (90..=125).contains(&v) && (ctx == Ctx::Age || years_old_after(scan, seq.groups[0].tok))
        {
            return m(Category::Age, 0.9);
        }
    }

    // Telephone and fax numbers.
    if let Some(score) = phone_score(seq, k, lens, sep, total, ctx, b) {
        let fax = ctx == Ctx::Fax
            || fax_after(scan, seq.groups[k - 1].tok)
            || fax_before(scan, seq.groups[0].tok);
        let score = if phone_label_after(scan, seq.groups[k - 1].tok) || fax {
            score.max(0.9)
        } else {
            score
        };
        return m(if fax { Category::Fax } else { Category::Phone }, score);
    }
    None
}

fn numeric_date(
    scan: &mut Scan<'_>,
    seq: &Seq,
    k: usize,
    lens: &[usize],
    sep: u8,
    same_sep: bool,
    ctx: Ctx,
) -> Option<f32> {
    let b = scan.text.as_bytes();
    if seq.plus || seq.paren || !same_sep || !matches!(sep, b'-' | b'/' | b'.') {
        return None;
    }
    let v = |g| seq.val(b, g);
    let first_tok = seq.groups[0].tok;
    let prep_before = first_tok > 0
        && scan.gap(first_tok) == Gap::Space
        && DATE_PREPOSITIONS.contains(&word8(scan.bytes(first_tok - 1)));
    let date_ctx = ctx == Ctx::Date || prep_before;
    if k == 3 {
        if lens[0] == 4 && lens[1] <= 2 && lens[2] <= 2 {
            return (year_ok(v(0), 4) && month_day_ok(v(1), v(2))).then_some(0.95);
        }
        if lens[0] <= 2 && lens[1] <= 2 && year_ok(v(2), lens[2]) {
            let ok = month_day_ok(v(0), v(1)) || month_day_ok(v(1), v(0));
            let score = if lens[2] == 4 || sep == b'/' {
                0.9
            } else {
                0.75
            };
            return ok.then_some(if date_ctx { 0.95 } else { score });
        }
        return None;
    }
    if k != 2 || sep == b'.' {
        return None;
    }
    // Month and year: 03/2021.
    if lens[0] <= 2 && lens[1] == 4 {
        if (1..=12).contains(&v(0)) && year_ok(v(1), 4) {
            return Some(if date_ctx || sep == b'/' { 0.8 } else { 0.55 });
        }
        return None;
    }
    // A partial date: 7/22. Fractions, scores and ratios look the same, so the score depends
    // on what is around it.
    if lens[0] <= 2 && lens[1] <= 2 && month_day_ok(v(0), v(1)) {
        if sep == b'-' && !date_ctx {
            return None; // 3-5 days
        }
        let (m, d) = (v(0), v(1));
        let next = seq.groups[1].tok + 1;
        // `10/3.7`: a ratio of decimals, not a date.
        if scan.is_punct(next, b'.')
            && scan.gap(next) == Gap::None
            && scan.kind(next + 1) == Some(Kind::Num)
            && scan.gap(next + 1) == Gap::None
        {
            return None;
        }
        let unit_after = scan.kind(next) == Some(Kind::Word)
            && UNITS_AFTER_FRACTION.contains(&word8(scan.bytes(next)));
        let prev_measure = seq.groups[0].tok > 0
            && MEASURES_BEFORE.contains(&word8(scan.bytes(seq.groups[0].tok - 1)));
        if unit_after || prev_measure {
            return None;
        }
        let fraction_like = matches!(d, 2 | 3 | 4 | 5 | 8 | 10) && m <= d;
        return Some(match (date_ctx, fraction_like) {
            (true, _) => 0.85,
            (false, true) => 0.3,
            (false, false) => 0.6,
        });
    }
    None
}

/// Prepositions that make the number after them a date: `on 3/4`, `since 03-2021`.
const DATE_PREPOSITIONS: [u64; 9] = words8([
    "on", "since", "from", "until", "by", "before", "after", "dated", "of",
]);

/// Words after `n/m` that make it a quantity, not a date.
const UNITS_AFTER_FRACTION: [u64; 39] = words8([
    "mg", "mcg", "g", "ml", "tab", "tabs", "tablet", "tablets", "cap", "caps", "capsule", "dose",
    "doses", "cup", "cups", "inch", "inches", "mile", "miles", "times", "of", "pts", "points",
    "strength", "units", "hr", "hrs", "hours", "teaspoon", "tsp", "tbsp", "oz", "lb", "lbs", "kg",
    "cm", "mm", "mmhg", "bpm",
]);

/// Words before `n/m` that make it a measurement or score: vital signs, scores, and the
/// ventilator and lab pairs of ICU notes (`PSV 10/5`, `CPAP 5/5`, `BUN/Cr 20/1.1`).
const MEASURES_BEFORE: [u64; 38] = words8([
    "bp", "pressure", "pain", "score", "scored", "rated", "rate", "strength", "grade", "ratio",
    "gcs", "apgar", "phq", "vision", "acuity", "va", "reflexes", "murmur", "x", "was", "is", "at",
    "psv", "ps", "cpap", "bipap", "peep", "ac", "simv", "imv", "prvc", "aprv", "vent", "settings",
    "cr", "creat", "abg", "vbg",
]);

/// Words right after a number that say it is a phone number (`555-0199 mobile`).
const PHONE_LABELS: [u64; 8] = words8([
    "office", "mobile", "cell", "home", "work", "phone", "tel", "desk",
]);

/// Words after an age: `92 years`, `92 yo`, `92 y/o`.
const YEARS_OLD: [u64; 7] = words8(["year", "years", "yr", "yrs", "yo", "yoa", "y"]);

/// A state code or state name (with an optional comma) right before token `i`.
fn after_state(scan: &mut Scan<'_>, i: usize) -> bool {
    if i == 0 || scan.gap(i) > Gap::Space {
        return false;
    }
    let mut p = i - 1;
    let t = scan.toks[p];
    if t.kind == Kind::Word && t.all_upper() && t.len() == 2 && scan.info(p).has(dict::STATE_CODE) {
        return true;
    }
    if t.kind == Kind::Word && t.is_cap() {
        if scan.info(p).has(dict::STATE) {
            return true;
        }
        // Two-word state names: New York, North Carolina.
        if p > 0 && scan.phrase_info(p - 1, p).has(dict::STATE) {
            return true;
        }
    }
    if t.is_punct(b',') && p > 0 {
        p -= 1;
        let t = scan.toks[p];
        return t.kind == Kind::Word
            && ((t.all_upper() && t.len() == 2 && scan.info(p).has(dict::STATE_CODE))
                || scan.info(p).has(dict::STATE));
    }
    false
}

/// `92-year-old`, `92 year old`, `92 years`, `92 yo`, `92 y/o`, `92 y.o.`.
fn years_old_after(scan: &Scan<'_>, i: usize) -> bool {
    let mut j = i + 1;
    if scan.is_punct(j, b'-') {
        j += 1;
    }
    if scan.gap(j) > Gap::Space {
        return false;
    }
    YEARS_OLD.contains(&word8(scan.bytes(j)))
}

/// "fax" among the few words before, on the same line ("Fax records to …", "fax forms to
/// …"): the keyword need not touch the number.
fn fax_before(scan: &Scan<'_>, first: usize) -> bool {
    let mut j = first;
    for _ in 0..5 {
        if j == 0 || scan.gap(j) >= Gap::Line {
            return false;
        }
        j -= 1;
        if scan.is(j, "fax") || scan.is(j, "faxed") {
            return true;
        }
    }
    false
}

/// "555-0199 fax" or "555-0199 (fax)": a label right after the number. Not "555-0148, fax
/// 555-0199", where the comma starts the next item of a list and "fax" labels that one.
fn fax_after(scan: &Scan<'_>, last: usize) -> bool {
    let label = |j: usize| scan.gap(j) <= Gap::Space && scan.s(j).eq_ignore_ascii_case("fax");
    label(last + 1) || (matches!(scan.s(last + 1), "(" | "[" | "-" | "/") && label(last + 2))
}

fn phone_label_after(scan: &Scan<'_>, last: usize) -> bool {
    (1..=2).any(|d| {
        let j = last + d;
        scan.gap(j) <= Gap::Space && PHONE_LABELS.contains(&word8(scan.bytes(j)))
    })
}

fn phone_score(
    seq: &Seq,
    k: usize,
    lens: &[usize],
    sep: u8,
    total: usize,
    ctx: Ctx,
    b: &[u8],
) -> Option<f32> {
    if !(7..=15).contains(&total) {
        return None;
    }
    let seps_ok = seq.groups[1..k]
        .iter()
        .all(|g| matches!(g.sep, b'-' | b'.' | b' ' | b')' | b'('));
    if !seps_ok {
        return None;
    }
    let phone_ctx = matches!(ctx, Ctx::Phone | Ctx::Fax);
    let first = b[seq.groups[0].start];
    let nanp_tail = k >= 3 && lens[k - 2..k] == [3, 4];
    let nanp = (k == 3 && lens == [3, 3, 4])
        || (k == 4 && nanp_tail && lens[1] == 3 && matches!(lens[0], 1..=3))
        || (k == 2 && seq.paren && lens == [3, 7]);
    let punct_seps = seq.groups[1..k].iter().any(|g| g.sep != b' ');
    let base: f32 = if (seq.plus && total >= 8) || (nanp && (punct_seps || seq.paren)) {
        0.85
    } else if nanp {
        0.7
    } else if k == 1 {
        if (total == 10 && first != b'0') || (total == 11 && first == b'1') {
            0.55
        } else {
            0.3
        }
    } else if k == 2 && lens == [3, 4] && sep == b'-' {
        0.65
    } else if k >= 3 && lens[1..].iter().all(|&l| l >= 2) && (8..=13).contains(&total) {
        if first == b'0' || seq.paren { 0.7 } else { 0.6 }
    } else if k == 2 && (8..=12).contains(&total) && lens.iter().all(|&l| l >= 2) {
        0.45
    } else if k >= 2 && lens.iter().all(|&l| l >= 2) {
        0.4
    } else {
        return None;
    };
    Some(if phone_ctx { base.max(0.9) } else { base })
}

/// Identifiers of letters and digits: VIN, IBAN, DEA, Medicare MBI, `94yo`.
fn alnum(scan: &mut Scan<'_>, i: usize, ctx: Ctx) -> Option<usize> {
    let s = scan.s(i);
    let b = s.as_bytes();
    // Ages written as one token: 94yo, 92y/o.
    let d = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if (2..=3).contains(&d) {
        let v: u32 = s[..d].parse().unwrap_or(0);
        let rest = &s[d..];
        if (90..=125).contains(&v)
            && ["yo", "y", "yr", "yrs", "yoa"]
                .iter()
                .any(|u| rest.eq_ignore_ascii_case(u))
        {
            scan.emit(i, i, Category::Age, 0.9);
            return Some(i + 1);
        }
    }
    if b.len() == 17 && checks::vin(b) {
        scan.emit(i, i, Category::Vehicle, 0.95);
        return Some(i + 1);
    }
    if b.len() == 9 && checks::dea(b) && b[..2].iter().all(u8::is_ascii_uppercase) {
        scan.emit(
            i,
            i,
            Category::License,
            if ctx == Ctx::Dea { 0.95 } else { 0.85 },
        );
        return Some(i + 1);
    }
    // IBAN, possibly written in groups of four.
    if b.len() >= 4
        && b[..2].iter().all(u8::is_ascii_alphabetic)
        && b[2..4].iter().all(u8::is_ascii_digit)
    {
        let mut acc: Vec<u8> = b.to_vec();
        let mut best = None;
        if checks::iban(&acc) {
            best = Some(i);
        }
        let mut j = i;
        while acc.len() < 34
            && scan.gap(j + 1) == Gap::Space
            && matches!(scan.kind(j + 1), Some(Kind::Num | Kind::AlNum | Kind::Word))
            && scan.toks[j + 1].len() <= 4
        {
            j += 1;
            acc.extend_from_slice(scan.s(j).as_bytes());
            if checks::iban(&acc) {
                best = Some(j);
            }
        }
        if let Some(e) = best {
            scan.emit(i, e, Category::Iban, 0.95);
            return Some(e + 1);
        }
    }
    // Medicare MBI, with or without dashes (1EG4-TE5-MK73).
    let mut acc: Vec<u8> = b.to_vec();
    let mut j = i;
    while acc.len() < 11
        && scan.is_punct(j + 1, b'-')
        && scan.gap(j + 1) == Gap::None
        && scan.gap(j + 2) == Gap::None
        && matches!(scan.kind(j + 2), Some(Kind::AlNum | Kind::Num | Kind::Word))
    {
        j += 2;
        acc.extend_from_slice(scan.s(j).as_bytes());
    }
    if checks::mbi(&acc) {
        scan.emit(i, j, Category::HealthPlan, 0.9);
        return Some(j + 1);
    }
    None
}

/// A GS1 UDI: `(01)` and 14 digits, then more `(AI)value` groups.
fn udi(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    if !(scan.is_punct(i + 2, b')')
        && scan.kind(i + 3) == Some(Kind::Num)
        && scan.toks.get(i + 3).is_some_and(|t| t.len() == 14))
    {
        return None;
    }
    let mut j = i + 3;
    while scan.is_punct(j + 1, b'(')
        && scan.gap(j + 1) == Gap::None
        && scan.kind(j + 2) == Some(Kind::Num)
        && scan.is_punct(j + 3, b')')
        && matches!(scan.kind(j + 4), Some(Kind::Num | Kind::AlNum))
    {
        j += 4;
    }
    scan.emit(i, j, Category::Device, 0.9);
    Some(j + 1)
}
