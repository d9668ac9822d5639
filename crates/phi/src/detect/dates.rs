//! Dates written with month names: `March 3rd`, `Mar. 3, 2021`, `3 Mar 2021`, `the 3rd of
//! March`, `March 2021`. A year alone is not PHI under Safe Harbor and is never reported; a
//! month with a day or a year is.

use super::Scan;
use crate::Category;
use crate::lex::{Gap, Kind};

/// A day of the month at token `i`: `3`, `03`, `3rd`, `21st`.
fn day_at(scan: &Scan<'_>, i: usize) -> bool {
    let s = scan.s(i);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 2 {
        return false;
    }
    let Ok(v) = s[..digits].parse::<u32>() else {
        return false;
    };
    let rest = &s[digits..];
    (1..=31).contains(&v)
        && ["", "st", "nd", "rd", "th"]
            .iter()
            .any(|u| rest.eq_ignore_ascii_case(u))
}

fn year_at(scan: &Scan<'_>, i: usize) -> bool {
    scan.kind(i) == Some(Kind::Num)
        && scan.s(i).len() == 4
        && scan
            .s(i)
            .parse::<u32>()
            .is_ok_and(|y| (1800..=2199).contains(&y))
}

/// Skips an optional `.` and then an optional `,` after token `i` (`Mar.`, `3rd,`).
fn skip_dot_comma(scan: &Scan<'_>, mut i: usize) -> usize {
    if scan.is_punct(i + 1, b'.') && scan.gap(i + 1) == Gap::None {
        i += 1;
    }
    if scan.is_punct(i + 1, b',') && scan.gap(i + 1) == Gap::None {
        i += 1;
    }
    i
}

/// A month-name date at word token `i` (the month), possibly starting at a day before it.
/// Returns the token after it when one was found.
pub(super) fn at(scan: &mut Scan<'_>, i: usize) -> Option<usize> {
    let t = *scan.tok(i)?;
    if t.kind != Kind::Word || t.len() < 3 {
        return None;
    }
    // Months are in the small table, already looked up for every short word.
    if scan.info_small(i).month() == 0 {
        return None;
    }
    let word = scan.s(i);
    // "may", "mar" and "march" are also verbs; lower-case abbreviations are other words.
    if t.is_lower() && (word == "may" || word == "march" || word.len() <= 4) {
        return None;
    }
    let after = skip_dot_comma(scan, i);
    let mut start = i;
    let mut end = None;
    let mut score = 0.9;
    // Month day[, year]
    let d = after + 1;
    if scan.gap(d) <= Gap::Space && day_at(scan, d) && !scan.is_used(d) {
        end = Some(d);
        let y = skip_dot_comma(scan, d) + 1;
        if scan.gap(y) <= Gap::Space && year_at(scan, y) {
            end = Some(y);
        }
    } else if scan.gap(d) <= Gap::Space && year_at(scan, d) && !scan.is_used(d) {
        // Month year
        end = Some(d);
        score = 0.75;
    }
    // day [of] Month [year]
    if i > 0 && scan.gap(i) <= Gap::Space {
        let mut p = i - 1;
        if scan.is(p, "of") && p > 0 && scan.gap(p) <= Gap::Space {
            p -= 1;
        }
        if p < i && day_at(scan, p) && !scan.is_used(p) {
            start = p;
            score = 0.9;
            let y = skip_dot_comma(scan, i) + 1;
            let e = if scan.gap(y) <= Gap::Space && year_at(scan, y) {
                y
            } else {
                i
            };
            end = Some(end.map_or(e, |x: usize| x.max(e)));
        }
    }
    let e = end?;
    scan.emit(start, e, Category::Date, score);
    Some(e + 1)
}
