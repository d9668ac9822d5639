//! Check-digit and format validators for identifiers whose format has one: Luhn (payment
//! cards, IMEI), NPI, SSN assignment rules, VIN check digit, IBAN mod-97, DEA checksum and the
//! Medicare Beneficiary Identifier format. A look-alike that fails its check is not reported
//! under that category.

/// Luhn (mod 10) over ASCII digits; false for anything else or fewer than two digits.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.len() < 2 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// A National Provider Identifier: 10 digits, first 1 or 2, Luhn-valid with the `80840`
/// prefix the standard prescribes.
pub fn npi(digits: &[u8]) -> bool {
    if digits.len() != 10 || !matches!(digits.first(), Some(b'1' | b'2')) {
        return false;
    }
    let mut full = Vec::with_capacity(15);
    full.extend_from_slice(b"80840");
    full.extend_from_slice(digits);
    luhn(&full)
}

/// A US social security number that could have been issued: area not 000, 666 or 900–999,
/// group not 00, serial not 0000. `area`, `group`, `serial` are the digit groups.
pub fn ssn(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let num = |d: &[u8]| -> Option<u32> {
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0, |a, &c| a * 10 + u32::from(c - b'0')))
    };
    match (num(area), num(group), num(serial)) {
        (Some(a), Some(g), Some(s)) if area.len() == 3 && group.len() == 2 && serial.len() == 4 => {
            a != 0 && a != 666 && a < 900 && g != 0 && s != 0
        }
        _ => false,
    }
}

fn vin_value(c: u8) -> Option<u32> {
    Some(match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A' | b'J' => 1,
        b'B' | b'K' | b'S' => 2,
        b'C' | b'L' | b'T' => 3,
        b'D' | b'M' | b'U' => 4,
        b'E' | b'N' | b'V' => 5,
        b'F' | b'W' => 6,
        b'G' | b'P' | b'X' => 7,
        b'H' | b'Y' => 8,
        b'R' | b'Z' => 9,
        _ => return None,
    })
}

/// A 17-character vehicle identification number whose ninth character is the check digit
/// of ISO 3779 / 49 CFR 565 (letters I, O and Q never appear).
pub fn vin(s: &[u8]) -> bool {
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    if s.len() != 17 || !s.iter().any(u8::is_ascii_digit) {
        return false;
    }
    let mut sum = 0;
    for (i, &c) in s.iter().enumerate() {
        let Some(v) = vin_value(c.to_ascii_uppercase()) else {
            return false;
        };
        sum += v * WEIGHTS[i];
    }
    let check = match sum % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    };
    s[8].to_ascii_uppercase() == check
}

/// An IBAN (spaces already removed): two letters, two check digits, 11–30 letters or digits,
/// and mod-97 of the rearranged number equal to 1 (ISO 13616).
pub fn iban(s: &[u8]) -> bool {
    if !(15..=34).contains(&s.len())
        || !s[..2].iter().all(u8::is_ascii_alphabetic)
        || !s[2..4].iter().all(u8::is_ascii_digit)
        || !s.iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let mut rem = 0u32;
    for &c in s[4..].iter().chain(&s[..4]) {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(c - b'A') + 10) % 97;
        }
    }
    rem == 1
}

/// A DEA registration number: a registrant-type letter, a letter (or 9), seven digits, the
/// last being (d1+d3+d5 + 2·(d2+d4+d6)) mod 10.
pub fn dea(s: &[u8]) -> bool {
    if s.len() != 9 {
        return false;
    }
    let first = s[0].to_ascii_uppercase();
    let second = s[1].to_ascii_uppercase();
    if !b"ABCDEFGHJKLMPRSTUX".contains(&first) || !(second.is_ascii_uppercase() || second == b'9') {
        return false;
    }
    let d = &s[2..];
    if !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let v = |i: usize| u32::from(d[i] - b'0');
    let sum = v(0) + v(2) + v(4) + 2 * (v(1) + v(3) + v(5));
    sum % 10 == v(6)
}

/// A Medicare Beneficiary Identifier (dashes removed): 11 characters in the CMS pattern
/// `C A AN N A AN N A A N N`, letters excluding S, L, O, I, B and Z.
pub fn mbi(s: &[u8]) -> bool {
    if s.len() != 11 {
        return false;
    }
    let letter = |c: u8| {
        let c = c.to_ascii_uppercase();
        c.is_ascii_uppercase() && !b"SLOIBZ".contains(&c)
    };
    let digit = |c: u8| c.is_ascii_digit();
    let either = |c: u8| letter(c) || digit(c);
    (b'1'..=b'9').contains(&s[0])
        && letter(s[1])
        && either(s[2])
        && digit(s[3])
        && letter(s[4])
        && either(s[5])
        && digit(s[6])
        && letter(s[7])
        && letter(s[8])
        && digit(s[9])
        && digit(s[10])
        // Written in upper case; a lower-case run is a word, not an MBI.
        && !s.iter().any(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_cases() {
        let cases: &[(&str, bool)] = &[
            ("4111111111111111", true),
            ("4111111111111112", false),
            ("378282246310005", true),
            ("6011111111111117", true),
            ("490154203237518", true), // an IMEI
            ("0", false),
            ("12a4", false),
        ];
        for &(s, want) in cases {
            assert_eq!(luhn(s.as_bytes()), want, "{s}");
        }
    }

    #[test]
    fn npi_cases() {
        assert!(npi(b"1234567893"));
        assert!(!npi(b"1234567890"));
        assert!(!npi(b"3234567893"));
    }

    #[test]
    fn ssn_rules() {
        let cases: &[(&str, bool)] = &[
            ("123-45-6789", true),
            ("000-12-3456", false),
            ("666-12-3456", false),
            ("900-12-3456", false),
            ("999-12-3456", false),
            ("123-00-4567", false),
            ("123-45-0000", false),
            ("899-99-9999", true),
        ];
        for &(s, want) in cases {
            let b = s.as_bytes();
            assert_eq!(ssn(&b[0..3], &b[4..6], &b[7..11]), want, "{s}");
        }
    }

    #[test]
    fn vin_check_digit() {
        assert!(vin(b"1HGCM82633A004352"));
        assert!(vin(b"1M8GDM9AXKP042788"));
        assert!(!vin(b"1HGCM82634A004352"), "wrong check digit");
        assert!(!vin(b"1HGCM8263OA004352"), "letter O is never used");
        assert!(!vin(b"ABCDEFGHJKLMNPRST"), "no digits");
    }

    #[test]
    fn iban_mod97() {
        assert!(iban(b"GB82WEST12345698765432"));
        assert!(iban(b"DE89370400440532013000"));
        assert!(iban(b"gb82west12345698765432"), "case does not matter");
        assert!(!iban(b"GB82WEST12345698765433"));
        assert!(!iban(b"GB82"));
    }

    #[test]
    fn dea_checksum() {
        assert!(dea(b"AB1234563"));
        assert!(!dea(b"AB1234564"));
        assert!(!dea(b"IB1234563"), "I is not a registrant type");
    }

    #[test]
    fn mbi_format() {
        assert!(mbi(b"1EG4TE5MK73"));
        assert!(!mbi(b"1EG4TE5MK7A"));
        assert!(!mbi(b"0EG4TE5MK73"));
        assert!(!mbi(b"1SG4TE5MK73"), "S is excluded");
    }
}
