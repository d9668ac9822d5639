//! The closed set of identifier categories the detector reports, and how each maps to the 18
//! HIPAA Safe Harbor items of 45 CFR 164.514(b)(2)(i).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What kind of identifier a [`crate::Span`] covers.
///
/// Serialised in SCREAMING_SNAKE_CASE (`PERSON`, `STREET_ADDRESS`, …), the same text used in
/// `[CATEGORY]` redaction placeholders and `[CATEGORY_N]` pseudonyms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    /// Safe Harbor (A): names of the individual, relatives, employers or household members.
    /// Clinicians' names are reported too: a de-identification pass cannot tell who is who.
    Person,
    /// (B) street address, including unit, P.O. box and military addresses.
    StreetAddress,
    /// (B) city, town, county or other place smaller than a state.
    City,
    /// (B) ZIP or other postal code.
    ZipCode,
    /// (B) a named place smaller than a state that is not an address or a city: a hospital,
    /// clinic, nursing home, rehabilitation centre or ward (`Sacred Heart`, `VAMC`).
    Location,
    /// (C) a date element other than the year alone: full, partial (`7/22`) or month-name
    /// dates (`March 3rd`, `3 Mar 2021`, `March 2021`).
    Date,
    /// (C) an age over 89.
    Age,
    /// (D) telephone number.
    Phone,
    /// (E) fax number.
    Fax,
    /// (F) e-mail address.
    Email,
    /// (G) social security number (area, group and serial rules checked).
    Ssn,
    /// (H) medical record number.
    Mrn,
    /// (I) health plan beneficiary number (member, subscriber, policy, Medicare MBI).
    HealthPlan,
    /// (J) account number.
    Account,
    /// (J) payment card number (Luhn-checked): an account number.
    CreditCard,
    /// (J) international bank account number (mod-97 checked): an account number.
    Iban,
    /// (K) certificate or licence number (driver's licence, NPI, DEA, professional licence).
    License,
    /// (L) vehicle identifier: VIN (check digit verified) or licence plate.
    Vehicle,
    /// (M) device identifier or serial number (serial, UDI, IMEI, MAC address).
    Device,
    /// (N) web URL or domain.
    Url,
    /// (O) IP address, v4 or v6.
    IpAddress,
    /// (P) biometric identifier mentioned as such (fingerprint, voiceprint, retinal scan …).
    Biometric,
    /// (R) any other unique identifying number, code or characteristic, found next to words
    /// that say it identifies something (`ID`, `#`, `claim`, `accession`, `passport` …).
    Id,
}

impl Category {
    /// Every category, in declaration order.
    pub const ALL: [Category; 23] = [
        Category::Person,
        Category::StreetAddress,
        Category::City,
        Category::ZipCode,
        Category::Location,
        Category::Date,
        Category::Age,
        Category::Phone,
        Category::Fax,
        Category::Email,
        Category::Ssn,
        Category::Mrn,
        Category::HealthPlan,
        Category::Account,
        Category::CreditCard,
        Category::Iban,
        Category::License,
        Category::Vehicle,
        Category::Device,
        Category::Url,
        Category::IpAddress,
        Category::Biometric,
        Category::Id,
    ];

    /// The SCREAMING_SNAKE_CASE name, as serialised.
    pub const fn name(self) -> &'static str {
        match self {
            Category::Person => "PERSON",
            Category::StreetAddress => "STREET_ADDRESS",
            Category::City => "CITY",
            Category::ZipCode => "ZIP_CODE",
            Category::Location => "LOCATION",
            Category::Date => "DATE",
            Category::Age => "AGE",
            Category::Phone => "PHONE",
            Category::Fax => "FAX",
            Category::Email => "EMAIL",
            Category::Ssn => "SSN",
            Category::Mrn => "MRN",
            Category::HealthPlan => "HEALTH_PLAN",
            Category::Account => "ACCOUNT",
            Category::CreditCard => "CREDIT_CARD",
            Category::Iban => "IBAN",
            Category::License => "LICENSE",
            Category::Vehicle => "VEHICLE",
            Category::Device => "DEVICE",
            Category::Url => "URL",
            Category::IpAddress => "IP_ADDRESS",
            Category::Biometric => "BIOMETRIC",
            Category::Id => "ID",
        }
    }

    /// The Safe Harbor item letter, (A) to (R), of 45 CFR 164.514(b)(2)(i) that the category
    /// implements. (Q), full-face photographs, has no category: text holds no images.
    pub const fn safe_harbor_item(self) -> char {
        match self {
            Category::Person => 'A',
            Category::StreetAddress | Category::City | Category::ZipCode | Category::Location => {
                'B'
            }
            Category::Date | Category::Age => 'C',
            Category::Phone => 'D',
            Category::Fax => 'E',
            Category::Email => 'F',
            Category::Ssn => 'G',
            Category::Mrn => 'H',
            Category::HealthPlan => 'I',
            Category::Account | Category::CreditCard | Category::Iban => 'J',
            Category::License => 'K',
            Category::Vehicle => 'L',
            Category::Device => 'M',
            Category::Url => 'N',
            Category::IpAddress => 'O',
            Category::Biometric => 'P',
            Category::Id => 'R',
        }
    }

    pub(crate) const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text is not the name of any category.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown PHI category `{0}`")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    /// Parses a category name, ignoring ASCII case (`person` and `PERSON` both work).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCategory(s.to_owned()))
    }
}

/// A set of categories, as a bit mask (there are fewer than 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CategorySet(u32);

impl CategorySet {
    /// Every category.
    pub const fn all() -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < Category::ALL.len() {
            bits |= Category::ALL[i].bit();
            i += 1;
        }
        CategorySet(bits)
    }

    /// No category.
    pub const fn empty() -> Self {
        CategorySet(0)
    }

    /// Whether `c` is in the set.
    pub const fn contains(self, c: Category) -> bool {
        self.0 & c.bit() != 0
    }

    /// The set with `c` added.
    #[must_use]
    pub const fn with(self, c: Category) -> Self {
        CategorySet(self.0 | c.bit())
    }

    /// The set with `c` removed.
    #[must_use]
    pub const fn without(self, c: Category) -> Self {
        CategorySet(self.0 & !c.bit())
    }
}

impl FromIterator<Category> for CategorySet {
    fn from_iter<I: IntoIterator<Item = Category>>(iter: I) -> Self {
        iter.into_iter()
            .fold(CategorySet::empty(), CategorySet::with)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for c in Category::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<Category>(&json).unwrap(), c);
            assert_eq!(c.name().to_lowercase().parse::<Category>().unwrap(), c);
        }
        assert!("NOPE".parse::<Category>().is_err());
    }

    #[test]
    fn every_safe_harbor_item_but_photographs_has_a_category() {
        let items: std::collections::BTreeSet<char> =
            Category::ALL.iter().map(|c| c.safe_harbor_item()).collect();
        let want: std::collections::BTreeSet<char> = ('A'..='R').filter(|&c| c != 'Q').collect();
        assert_eq!(items, want);
    }

    #[test]
    fn sets_add_and_remove() {
        let s = CategorySet::empty().with(Category::Ssn);
        assert!(s.contains(Category::Ssn) && !s.contains(Category::Person));
        assert!(!s.without(Category::Ssn).contains(Category::Ssn));
        assert!(
            Category::ALL
                .iter()
                .all(|&c| CategorySet::all().contains(c))
        );
    }
}
