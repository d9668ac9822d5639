//! E-mail addresses, URLs and bare domains, IPv6 and MAC addresses: identifiers whose syntax
//! is exact, found from an anchor token (`@`, `http`, `www`, a hex group before `:`) and
//! measured on the bytes.

use std::net::Ipv6Addr;

use super::Scan;
use crate::Category;
use crate::lex::{Gap, Kind};

/// Generic top-level domains that make `word.tld` a domain on their own.
const GENERIC_TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "int", "io", "info", "biz", "health", "app", "dev",
    "ai", "co", "online", "site", "us", "uk", "ca", "de", "fr", "au",
];

fn is_local_part_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-'".contains(&c)
}

fn is_domain_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// Where a URL that starts at `start` ends: at whitespace or a character that cannot be in an
/// unquoted URL, less trailing sentence punctuation.
fn url_end(b: &[u8], start: usize) -> usize {
    let mut e = start;
    while e < b.len() {
        let c = b[e];
        if c.is_ascii_whitespace() || b"<>\"'`|{}^\\".contains(&c) {
            break;
        }
        e += 1;
    }
    while e > start && b".,;:!?)]}".contains(&b[e - 1]) {
        // Keep a closing bracket whose opener is inside the URL.
        if b[e - 1] == b')' && b[start..e].contains(&b'(') {
            break;
        }
        e -= 1;
    }
    e
}

/// Web identifiers in every whitespace-delimited chunk of glued tokens
/// (`john.smith@example.com`), chunk by chunk, before any other family looks at the text:
/// an e-mail's local part must not become a name first. Only chunks of more than one token
/// with an `@`, `:` or `.` can hold one; those characters are always tokens of their own, and
/// the lexer lists them, so the chunks around them are all that is looked at.
pub(super) fn chunks(scan: &mut Scan<'_>) {
    let n = scan.len();
    // The first token after the last chunk looked at.
    let mut done = 0;
    for m in 0..scan.scratch.web_marks.len() {
        let p = scan.scratch.web_marks[m];
        if p < done || p >= n {
            continue;
        }
        // The usual chunk: one token and a full stop or a colon ("done.", "Phone:"), which
        // holds nothing unless the token is `www` (see `chunk_at`).
        let t = scan.toks[p];
        if t.ch != b'@'
            && t.gap == Gap::None
            && p > 0
            && scan.gap(p + 1) != Gap::None
            && (p == 1 || scan.toks[p - 1].gap != Gap::None)
            && !scan.toks[p - 1].is_punct(b'@')
            && !scan.toks[p - 1].is_punct(b':')
            && !scan.toks[p - 1].is_punct(b'.')
            && (t.ch == b':' || !scan.bytes(p - 1).eq_ignore_ascii_case(b"www"))
        {
            done = p + 1;
            continue;
        }
        let mut i = p;
        while i > 0 && scan.toks[i].gap == Gap::None {
            i -= 1;
        }
        let mut e = p;
        while e + 1 < n && scan.toks[e + 1].gap == Gap::None {
            e += 1;
        }
        done = e + 1;
        if e == i {
            continue;
        }
        let (mut at, mut colons, mut dots) = (false, 0u32, 0u32);
        for t in &scan.toks[i..=e] {
            if t.kind == Kind::Punct {
                match t.ch {
                    b'@' => at = true,
                    b':' => colons += 1,
                    b'.' => dots += 1,
                    _ => {}
                }
            }
        }
        chunk_at(scan, i, e, at, colons, dots);
    }
}

/// Web identifiers in the chunk of tokens `i..=e`, which holds `colons` colons, `dots` dots
/// and an `@` if `at`.
fn chunk_at(scan: &mut Scan<'_>, i: usize, e: usize, at: bool, colons: u32, dots: u32) {
    let b = scan.text.as_bytes();
    // Most chunks that get this far are a word and a full stop or a colon ("Dr.", "done.",
    // "Phone:"), which can hold nothing: without `@`, an e-mail is impossible; with fewer
    // than two colons, so is an IPv6 or MAC run, and a URL scheme needs `://`; a dot that
    // ends the chunk starts no domain label, and makes a URL only after `www`.
    if !at && colons < 2 && dots <= 1 {
        let scheme = colons == 1
            && b.get(scan.toks[i].start..scan.toks[e].end)
                .is_some_and(|bytes| bytes.windows(3).any(|w| w == b"://"));
        let final_dot_only = dots == 0
            || (scan.is_punct(e, b'.') && !scan.bytes(e - 1).eq_ignore_ascii_case(b"www"));
        if !scheme && final_dot_only {
            return;
        }
    }
    for k in i..=e {
        if !scan.is_used(k) {
            token(scan, b, k);
        }
    }
}

fn token(scan: &mut Scan<'_>, b: &[u8], i: usize) {
    let Some(&t) = scan.tok(i) else { return };
    match t.kind {
        Kind::Punct if t.ch == b'@' => email(scan, b, t.start),
        Kind::Word => {
            let s = scan.s(i);
            let first = s.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
            let maybe = (3..=5).contains(&s.len()) && matches!(first, b'h' | b'f' | b's' | b'w');
            if !maybe {
                glued(scan, b, i);
                return;
            }
            let scheme = ["http", "https", "ftp", "sftp"]
                .iter()
                .any(|p| s.eq_ignore_ascii_case(p));
            if scheme && b.get(t.end..t.end + 3) == Some(b"://") {
                let e = url_end(b, t.start);
                scan.emit_bytes(t.start, e, Category::Url, 0.95);
            } else if s.eq_ignore_ascii_case("www") && scan.is_punct(i + 1, b'.') {
                let e = url_end(b, t.start);
                scan.emit_bytes(t.start, e, Category::Url, 0.9);
            } else {
                glued(scan, b, i);
            }
        }
        Kind::Num | Kind::AlNum => glued(scan, b, i),
        Kind::Punct if t.ch == b':' && scan.is_punct(i + 1, b':') => hex_colon(scan, b, i),
        _ => {}
    }
}

/// A word or number glued to a following `:` (hex run) or `.` (domain label).
fn glued(scan: &mut Scan<'_>, b: &[u8], i: usize) {
    if scan.gap(i + 1) != Gap::None {
        return;
    }
    if scan.is_punct(i + 1, b':') {
        hex_colon(scan, b, i);
    } else if scan.is_punct(i + 1, b'.') && scan.kind(i) != Some(Kind::Num) {
        bare_domain(scan, b, i);
    }
}

fn email(scan: &mut Scan<'_>, b: &[u8], at: usize) {
    let mut s = at;
    while s > 0 && is_local_part_byte(b[s - 1]) {
        s -= 1;
    }
    while s < at && !b[s].is_ascii_alphanumeric() {
        s += 1;
    }
    let mut e = at + 1;
    while e < b.len() && is_domain_byte(b[e]) {
        e += 1;
    }
    while e > at + 1 && !b[e - 1].is_ascii_alphanumeric() {
        e -= 1;
    }
    let domain = &b[at + 1..e];
    let Some(dot) = domain.iter().rposition(|&c| c == b'.') else {
        return;
    };
    let tld = &domain[dot + 1..];
    if s < at && dot > 0 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) {
        scan.emit_bytes(s, e, Category::Email, 0.95);
    }
}

/// `example.com`, `portal.mercy.org/login`: labels joined by dots with no spaces, ending in
/// a known generic TLD, or any two-letter country TLD when there are three labels or a path.
fn bare_domain(scan: &mut Scan<'_>, b: &[u8], i: usize) {
    if scan.gap(i) == Gap::None && i > 0 {
        return;
    }
    let mut labels = 1;
    let mut j = i;
    while scan.is_punct(j + 1, b'.')
        && scan.gap(j + 1) == Gap::None
        && scan.gap(j + 2) == Gap::None
        && matches!(scan.kind(j + 2), Some(Kind::Word | Kind::AlNum | Kind::Num))
    {
        j += 2;
        labels += 1;
    }
    if labels < 2 || scan.kind(j) != Some(Kind::Word) {
        return;
    }
    let tld = scan.s(j);
    if !tld.bytes().all(|c| c.is_ascii_lowercase()) {
        return;
    }
    let has_path = scan.is_punct(j + 1, b'/') && scan.gap(j + 1) == Gap::None;
    let generic = GENERIC_TLDS.contains(&tld);
    let country = tld.len() == 2 && (labels >= 3 || has_path);
    if !(generic || country) {
        return;
    }
    // The label before the TLD must look like a name, not a sentence end (`done.it`).
    if scan.s(j - 2).len() < 2 {
        return;
    }
    let start = scan.start(i);
    let end = if has_path {
        url_end(b, scan.end(j))
    } else {
        scan.end(j)
    };
    scan.emit_bytes(start, end, Category::Url, if generic { 0.85 } else { 0.75 });
}

/// IPv6 (`2001:db8::1`) and MAC (`00:1A:2B:3C:4D:5E`) addresses: a run of hex digits and
/// colons, validated by the standard library's IPv6 parser or the MAC shape.
fn hex_colon(scan: &mut Scan<'_>, b: &[u8], i: usize) {
    let Some(&t) = scan.tok(i) else { return };
    if t.gap == Gap::None && i > 0 && !scan.is_punct(i - 1, b'(') && !scan.is_punct(i - 1, b'[') {
        // Inside something else (a URL, a word with a colon).
        if !(t.kind == Kind::Punct && t.ch == b':') {
            return;
        }
    }
    let start = t.start;
    let mut e = start;
    let mut colons = 0;
    while e < b.len() && (b[e].is_ascii_hexdigit() || b[e] == b':' || b[e] == b'.') {
        if b[e] == b':' {
            colons += 1;
        }
        e += 1;
    }
    if colons < 2 {
        return;
    }
    // A letter right after the run means it was a word (`cafe:bad:beer`s); give up.
    if e < b.len() && b[e].is_ascii_alphanumeric() {
        return;
    }
    let mut end = e;
    while end > start && matches!(b[end - 1], b'.' | b':') {
        // Keep a trailing "::" (an address ending in zeros).
        if b[end - 1] == b':' && end >= 2 && b[end - 2] == b':' {
            break;
        }
        end -= 1;
    }
    let Some(run) = scan.text.get(start..end) else {
        return;
    };
    if run.len() == 17 && colons == 5 && is_mac(run.as_bytes(), b':') {
        scan.emit_bytes(start, end, Category::Device, 0.9);
        return;
    }
    if run.bytes().any(|c| c.is_ascii_hexdigit()) && run.parse::<Ipv6Addr>().is_ok() {
        scan.emit_bytes(start, end, Category::IpAddress, 0.95);
    }
}

fn is_mac(s: &[u8], sep: u8) -> bool {
    s.len() == 17
        && s.iter().enumerate().all(|(k, &c)| {
            if k % 3 == 2 {
                c == sep
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// A MAC address written with dashes (`00-1A-2B-3C-4D-5E`), checked from the numbers pass.
pub(super) fn dashed_mac(b: &[u8], start: usize) -> bool {
    b.get(start..start + 17).is_some_and(|s| is_mac(s, b'-'))
        && b.get(start + 17).is_none_or(|c| !c.is_ascii_alphanumeric())
}
