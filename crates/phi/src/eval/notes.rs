//! A seeded generator of labelled clinical-style notes covering all 18 Safe Harbor
//! categories, with realistic non-PHI distractors (vitals, doses, fractions, scores, years,
//! ages under 90, eponyms, drug brands, capitalised section words).
//!
//! To keep the evaluation honest it does not draw only from the detector's own dictionaries:
//! half the people get names from `data/eval/` (Faker names in none of the detector's lists),
//! half the cities are invented Faker-style (`Lake Dorotheamouth`), street names come from
//! both pools, and identifiers are random (with valid check digits where the format has
//! them, because real ones do). The same seed always gives the same notes.

use super::{Doc, Gold, GoldLabel};
use crate::Category;

static CENSUS_FIRST: &str = include_str!("../../data/first_names.txt");
static CENSUS_LAST: &str = include_str!("../../data/surnames.txt");
static FAKER_FIRST: &str = include_str!("../../data/eval/faker_first_names.txt");
static FAKER_LAST: &str = include_str!("../../data/eval/faker_surnames.txt");
static US_CITIES: &str = include_str!("../../data/us_cities.txt");
static US_STATES: &str = include_str!("../../data/us_states.txt");

/// SplitMix64: tiny, seedable, and stable across versions of any crate.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(super) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
    pub(super) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub(super) fn pick<'a, T: ?Sized>(&mut self, v: &[&'a T]) -> &'a T {
        v[self.below(v.len())]
    }
    pub(super) fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    pub(super) fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'A' + self.below(26) as u8))
            .collect()
    }
}

pub(super) fn title_case(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

pub(super) struct Pools {
    pub(super) census_first: Vec<&'static str>,
    census_last: Vec<&'static str>,
    faker_first: Vec<&'static str>,
    faker_last: Vec<&'static str>,
    cities: Vec<&'static str>,
    states: Vec<&'static str>,
}

impl Pools {
    pub(super) fn new() -> Self {
        let lines = |s: &'static str, n: usize| -> Vec<&'static str> {
            s.lines().filter(|l| !l.is_empty()).take(n).collect()
        };
        Pools {
            census_first: lines(CENSUS_FIRST, 1500),
            census_last: lines(CENSUS_LAST, 8000),
            faker_first: lines(FAKER_FIRST, usize::MAX),
            faker_last: lines(FAKER_LAST, usize::MAX),
            cities: lines(US_CITIES, usize::MAX)
                .into_iter()
                .filter(|c| c.chars().all(|ch| ch.is_ascii_alphabetic() || ch == ' '))
                .collect(),
            states: US_STATES
                .lines()
                .filter_map(|l| l.split('\t').next())
                .filter(|c| !matches!(*c, "aa" | "ae" | "ap"))
                .collect(),
        }
    }
}

/// Text being built, with its gold spans.
pub(super) struct Note {
    pub(super) text: String,
    pub(super) gold: Vec<Gold>,
}

impl Note {
    pub(super) fn t(&mut self, s: &str) {
        self.text.push_str(s);
    }
    pub(super) fn phi(&mut self, c: Category, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        self.gold.push(Gold {
            start,
            end: self.text.len(),
            label: GoldLabel::Phi(c),
        });
    }
}

pub(super) struct Gen {
    pub(super) r: Rng,
    pub(super) p: Pools,
}

fn luhn_complete(body: &str) -> String {
    for d in 0..10u8 {
        let s = format!("{body}{d}");
        if crate::checks::luhn(s.as_bytes()) {
            return s;
        }
    }
    body.to_owned()
}

impl Gen {
    pub(super) fn first(&mut self) -> String {
        if self.r.chance(0.5) {
            title_case(self.r.pick(&self.p.census_first))
        } else {
            self.r.pick(&self.p.faker_first).to_owned()
        }
    }
    pub(super) fn last(&mut self) -> String {
        if self.r.chance(0.5) {
            title_case(self.r.pick(&self.p.census_last))
        } else {
            self.r.pick(&self.p.faker_last).to_owned()
        }
    }
    pub(super) fn full(&mut self) -> String {
        let f = self.first();
        let l = self.last();
        if self.r.chance(0.15) {
            let m = self.r.letters(1);
            format!("{f} {m}. {l}")
        } else {
            format!("{f} {l}")
        }
    }
    pub(super) fn city(&mut self) -> String {
        if self.r.chance(0.5) {
            self.r
                .pick(&self.p.cities)
                .split(' ')
                .map(title_case)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            let pre = ["North", "East", "West", "South", "New", "Lake", "Port"];
            let suf = [
                "town", "ton", "land", "ville", "berg", "burgh", "borough", "bury", "view", "port",
                "mouth", "stad", "furt", "chester", "fort", "haven", "side", "shire",
            ];
            let base = self.first();
            let s = suf[self.r.below(suf.len())];
            if self.r.chance(0.5) {
                format!("{} {base}{s}", pre[self.r.below(pre.len())])
            } else {
                format!("{base}{s}")
            }
        }
    }
    fn state(&mut self) -> String {
        self.r.pick(&self.p.states).to_ascii_uppercase()
    }
    fn street(&mut self) -> String {
        let suffixes = [
            "Street",
            "St",
            "Avenue",
            "Ave",
            "Road",
            "Rd",
            "Lane",
            "Ln",
            "Drive",
            "Dr",
            "Boulevard",
            "Blvd",
            "Court",
            "Ct",
            "Way",
            "Place",
            "Terrace",
            "Parkway",
            "Circle",
            "Trail",
        ];
        let names = [
            "Oak",
            "Maple",
            "Cedar",
            "Pine",
            "Elm",
            "Washington",
            "Lincoln",
            "Highland",
            "Sunset",
            "Park",
            "Lake",
            "Hill",
            "Main",
            "Church",
            "Mill",
            "River",
        ];
        let num = self.r.range(1, 19999);
        let name = match self.r.below(4) {
            0 => names[self.r.below(names.len())].to_owned(),
            1 => format!("{}th", self.r.range(4, 99)),
            _ => self.last(),
        };
        let dir = if self.r.chance(0.15) {
            ["N ", "S ", "E ", "W ", "North ", "West "][self.r.below(6)]
        } else {
            ""
        };
        let s = suffixes[self.r.below(suffixes.len())];
        format!("{num} {dir}{name} {s}")
    }
    fn zip(&mut self) -> String {
        let z = self.r.range(1001, 99950);
        if self.r.chance(0.2) {
            format!("{z:05}-{}", self.r.digits(4))
        } else {
            format!("{z:05}")
        }
    }
    fn date(&mut self) -> String {
        let months = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        let (y, m, d) = (
            self.r.range(1925, 2024),
            self.r.range(1, 12) as usize,
            self.r.range(1, 28),
        );
        let mn = months[m - 1];
        let ord = |d: u32| match d {
            1 | 21 | 31 => "st",
            2 | 22 => "nd",
            3 | 23 => "rd",
            _ => "th",
        };
        match self.r.below(10) {
            0 => format!("{m:02}/{d:02}/{y}"),
            1 => format!("{m}/{d}/{:02}", y % 100),
            2 => format!("{y}-{m:02}-{d:02}"),
            3 => format!("{mn} {d}, {y}"),
            4 => format!("{d} {} {y}", &mn[..3]),
            5 => format!("{}. {d}{}", &mn[..3], ord(d)),
            6 => format!("{mn} {d}{}", ord(d)),
            7 => format!("{m}/{d}"),
            8 => format!("the {d}{} of {mn}", ord(d)),
            _ => format!("{mn} {y}"),
        }
    }
    pub(super) fn phone(&mut self) -> String {
        let (a, b, c) = (
            self.r.range(201, 989),
            self.r.range(200, 999),
            self.r.digits(4),
        );
        match self.r.below(4) {
            0 => format!("({a}) {b}-{c}"),
            1 => format!("{a}-{b}-{c}"),
            2 => format!("{a}.{b}.{c}"),
            _ => format!("+1 {a} {b} {c}"),
        }
    }
    fn ssn(&mut self) -> String {
        let a = loop {
            let a = self.r.range(1, 899);
            if a != 666 {
                break a;
            }
        };
        format!(
            "{a:03}-{:02}-{:04}",
            self.r.range(1, 99),
            self.r.range(1, 9999)
        )
    }
    fn vin(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
        loop {
            let mut v: Vec<u8> = (0..17)
                .map(|_| ALPHABET[self.r.below(ALPHABET.len())])
                .collect();
            for c in [
                b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9', b'X',
            ] {
                v[8] = c;
                if crate::checks::vin(&v) {
                    return String::from_utf8_lossy(&v).into_owned();
                }
            }
        }
    }
    fn card(&mut self) -> String {
        let body = format!("4{}", self.r.digits(14));
        let n = luhn_complete(&body);
        if self.r.chance(0.5) {
            n.as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            n
        }
    }
    fn iban(&mut self) -> String {
        let bban = format!("{}{}", self.r.letters(4), self.r.digits(14));
        for ck in 2..=98u32 {
            let s = format!("GB{ck:02}{bban}");
            if crate::checks::iban(s.as_bytes()) {
                return s;
            }
        }
        format!("GB00{bban}")
    }
    fn dea(&mut self) -> String {
        loop {
            let s = format!(
                "{}{}{}",
                ["A", "B", "F", "M"][self.r.below(4)],
                self.r.letters(1),
                self.r.digits(7)
            );
            if crate::checks::dea(s.as_bytes()) {
                return s;
            }
        }
    }
    fn npi(&mut self) -> String {
        loop {
            let s = format!("1{}", self.r.digits(9));
            if crate::checks::npi(s.as_bytes()) {
                return s;
            }
        }
    }
    fn mbi(&mut self) -> String {
        const L: &[u8] = b"ACDEFGHJKMNPQRTUVWXY";
        let mut l = || char::from(L[self.r.below(L.len())]);
        let (a, b, c, d, e, f) = (l(), l(), l(), l(), l(), l());
        let dg = |r: &mut Rng| r.range(0, 9);
        let (n1, n2, n3, n4, n5) = (
            self.r.range(1, 9),
            dg(&mut self.r),
            dg(&mut self.r),
            dg(&mut self.r),
            dg(&mut self.r),
        );
        format!("{n1}{a}{b}{n2}-{c}{d}{n3}-{e}{f}{n4}{n5}")
    }
    fn imei(&mut self) -> String {
        let body = format!("35{}", self.r.digits(12));
        luhn_complete(&body)
    }
    fn ipv4(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.r.range(11, 223),
            self.r.range(0, 255),
            self.r.range(0, 255),
            self.r.range(1, 254)
        )
    }
    fn ipv6(&mut self) -> String {
        let g: Vec<String> = (0..4)
            .map(|_| format!("{:x}", self.r.range(1, 0xffff)))
            .collect();
        format!("2001:db8:{}:{}::{}:{}", g[0], g[1], g[2], g[3])
    }
}

/// Clinical filler that is not PHI, some of it built to look like PHI.
const FILLER: &[&str] = &[
    "Vitals: BP 128/76, HR 72, RR 16, SpO2 97% on RA, T 98.6 F. ",
    "BP 142/88 at triage, repeat 131/79. ",
    "Labs notable for Na 138, K 4.1, Cr 1.02, HbA1c 7.2%. ",
    "Continue metformin 500 mg PO BID and Lipitor 40 mg nightly. ",
    "Take 1/2 tablet of lisinopril 10 mg daily for 2 weeks. ",
    "Pain 6/10, improved to 3/10 after ibuprofen. ",
    "Strength 5/5 in all extremities, reflexes 2+ and symmetric. ",
    "History of Parkinson's disease and Graves disease, on levothyroxine. ",
    "Foley catheter removed; Glasgow Coma Scale 15. ",
    "Diagnosed with type 2 diabetes in 2019 and hypertension in 2008. ",
    "Her mother died of breast cancer at 68; father had an MI at 54. ",
    "Denies chest pain, shortness of breath, fever or chills. ",
    "Plan: follow up in 3 months, repeat A1c and lipid panel. ",
    "Assessment: stable on current regimen. ",
    "Patient was counseled on diet and exercise for 20 minutes. ",
    "Seen in the Emergency Department on Monday at 14:30 for dizziness. ",
    "Referred to Cardiology for Holter monitoring and echo. ",
    "Smoking history of 30 pack-years, quit 10 years ago. ",
    "No known drug allergies. Immunizations up to date. ",
    "Discussed risks and benefits; Xarelto 20 mg started. ",
    "CT head without contrast was negative. MRI scheduled. ",
    "Walks 2 miles a day with a cane; uses a Zimmer frame at night. ",
    "ECOG 1. COVID-19 vaccine x3. Hepatitis B surface antigen negative. ",
    "Admitted to Mercy General Hospital ward 4B, bed 12. ",
];

/// Generates `n` labelled notes from `seed`: two note styles alternate (a structured
/// progress note and a narrative discharge summary).
pub fn generate_notes(seed: u64, n: usize) -> Vec<Doc> {
    let mut g = Gen {
        r: Rng(seed),
        p: Pools::new(),
    };
    (0..n)
        .map(|k| {
            if k % 2 == 0 {
                one_note(&mut g)
            } else {
                discharge_summary(&mut g)
            }
        })
        .collect()
}

/// Clinical prose that is not PHI and was not written with the detector's word lists in
/// mind: eponyms, brands, scores and abbreviations it has no entry for.
const NARRATIVE: &[&str] = &[
    "Exam notable for Kussmaul breathing and a positive Lhermitte sign. ",
    "ECG showed a Mobitz type II block; Brugada pattern was excluded. ",
    "Cheyne-Stokes respirations resolved after diuresis. ",
    "No Osler nodes, Janeway lesions or Roth spots; Duke criteria not met. ",
    "CHA2DS2-VASc 4, HAS-BLED 2; started Toujeo 20 units and Rybelsus 7 mg. ",
    "Migraines treated with Nurtec and Ubrelvy; Aimovig stopped. ",
    "Mood improved on Trintellix; Vraylar added for augmentation. ",
    "Uses a Dexcom G7 and an Omnipod 5 without problems. ",
    "NIHSS 4 on arrival, MoCA 26/30, PHQ-9 of 12 and GAD-7 of 8. ",
    "Transferred from the Cardiac ICU to Stepdown, Room 4B, bed 12, at 0830. ",
    "Trelegy Ellipta one puff daily; albuterol q6h as needed, used 2-3 times a week. ",
    "Horner syndrome on the left; Virchow's triad discussed with the family. ",
    "Stevens-Johnson syndrome ruled out by Dermatology. ",
    "She walks 30 minutes on most days and attends Pilates twice a week. ",
    "Discussed code status: Full Code. Goals of care meeting on Friday. ",
    "Hemoglobin 9.8 (baseline 11), platelets 182, INR 1.1. ",
    "Follow-up imaging in 6-8 weeks; return precautions reviewed. ",
];

fn narrative(g: &mut Gen, note: &mut Note, k: usize) {
    for _ in 0..k {
        note.t(NARRATIVE[g.r.below(NARRATIVE.len())]);
    }
}

/// A surname with the shapes real ones have: hyphens, particles, apostrophes.
fn varied_last(g: &mut Gen) -> String {
    match g.r.below(8) {
        0 => format!("{}-{}", g.last(), g.last()),
        1 => format!("van der {}", g.last()),
        2 => format!("O'{}", g.last()),
        _ => g.last(),
    }
}

/// A narrative discharge summary: an all-caps header ("SMITH, JOHN"), relatives named in
/// passing, partial and month-name dates, phone numbers with extensions.
fn discharge_summary(g: &mut Gen) -> Doc {
    use Category as C;
    let mut n = Note {
        text: String::new(),
        gold: Vec::new(),
    };
    let first = g.first();
    let last = varied_last(g);
    n.t("DISCHARGE SUMMARY\nPATIENT NAME: ");
    n.phi(
        C::Person,
        &format!("{}, {}", last.to_uppercase(), first.to_uppercase()),
    );
    n.t("\nADMITTED: ");
    let d = g.date();
    n.phi(C::Date, &d);
    n.t("   DISCHARGED: ");
    let d = g.date();
    n.phi(C::Date, &d);
    n.t("\nACCOUNT #: ");
    let a = g.r.digits(9);
    n.phi(C::Account, &a);
    n.t("\n\nHospital course: ");
    n.phi(C::Person, &format!("{first} {last}"));
    n.t(", aged ");
    n.phi(C::Age, &g.r.range(90, 104).to_string());
    n.t(", was brought in by her grandson, ");
    let gs = g.full();
    n.phi(C::Person, &gs);
    n.t(", after a fall at home. ");
    narrative(g, &mut n, 2);
    n.t("Orthopedics (Dr. ");
    let o = g.last();
    n.phi(C::Person, &o);
    n.t(") recommended non-operative care. ");
    narrative(g, &mut n, 2);
    n.t("Her neighbor ");
    let nb = g.first();
    n.phi(C::Person, &nb);
    n.t(" will check on her daily. ");
    n.t("Home: ");
    let st = g.street();
    n.phi(C::StreetAddress, &st);
    n.t(", ");
    let c = g.city();
    n.phi(C::City, &c);
    n.t(", ");
    let s = g.state();
    n.t(&s);
    n.t(" ");
    let z = g.zip();
    n.phi(C::ZipCode, &z);
    n.t(".\n\nFollow-up: clinic on ");
    let d = g.date();
    n.phi(C::Date, &d);
    n.t("; call ");
    let ph = format!("{} ext. {}", g.phone(), g.r.range(100, 9999));
    n.phi(C::Phone, &ph);
    n.t(" with questions, or fax forms to ");
    let fx = g.phone();
    n.phi(C::Fax, &fx);
    n.t(". ");
    narrative(g, &mut n, 1);
    n.t("Insurance member ID ");
    let m = format!("{}{}", g.r.letters(3), g.r.digits(8));
    n.phi(C::HealthPlan, &m);
    n.t("; MRN ");
    let mrn = g.r.digits(8);
    n.phi(C::Mrn, &mrn);
    n.t(". Patient portal user ");
    let em = format!(
        "{}.{}@{}",
        first.to_lowercase(),
        g.r.range(1, 999),
        "examplemail.com"
    );
    n.phi(C::Email, &em);
    n.t(".\n");
    n.phi(C::Person, &first);
    n.t(" and her grandson agree with the plan.\n-- ");
    let sig = g.full();
    n.phi(C::Person, &sig);
    n.t(", MD\n");
    Doc {
        text: n.text,
        gold: n.gold,
    }
}

fn filler(g: &mut Gen, note: &mut Note, k: usize) {
    for _ in 0..k {
        let f = FILLER[g.r.below(FILLER.len())];
        // The one hospital named in the filler is PHI (LOCATION), labelled as such.
        match f.split_once(FILLER_HOSPITAL) {
            Some((before, after)) => {
                note.t(before);
                note.phi(Category::Location, FILLER_HOSPITAL);
                note.t(after);
            }
            None => note.t(f),
        }
    }
}

/// The hospital that a line of [`FILLER`] names.
const FILLER_HOSPITAL: &str = "Mercy General Hospital";

fn one_note(g: &mut Gen) -> Doc {
    use Category as C;
    let mut n = Note {
        text: String::new(),
        gold: Vec::new(),
    };
    let patient = g.full();
    let pt_first = patient.split(' ').next().unwrap_or("").to_owned();
    // Header.
    n.t("Patient: ");
    n.phi(C::Person, &patient);
    n.t("\nDOB: ");
    let dob = g.date();
    n.phi(C::Date, &dob);
    n.t(match g.r.below(3) {
        0 => "   MRN: ",
        1 => "   MRN # ",
        _ => "   Medical record number ",
    });
    let mrn = match g.r.below(3) {
        0 => g.r.digits(8),
        1 => format!("{}-{}", g.r.letters(1), g.r.digits(7)),
        _ => g.r.digits(7),
    };
    n.phi(C::Mrn, &mrn);
    n.t("\n\n");
    // HPI.
    let age = g.r.range(90, 104);
    match g.r.below(4) {
        0 => {
            n.t("HPI: ");
            n.phi(C::Person, &pt_first);
            n.t(" is a ");
            n.phi(C::Age, &age.to_string());
            n.t("-year-old woman ");
        }
        1 => {
            n.t("HPI: Pt is a ");
            n.phi(C::Age, &age.to_string());
            n.t(" yo man ");
        }
        2 => {
            n.t("HPI: Mr. ");
            let l = patient.rsplit(' ').next().unwrap_or("").to_owned();
            n.phi(C::Person, &l);
            n.t(", age ");
            n.phi(C::Age, &age.to_string());
            n.t(", ");
        }
        _ => {
            n.t("HPI: This ");
            n.phi(C::Age, &age.to_string());
            n.t(" year old female ");
        }
    }
    n.t("presents with worsening fatigue since ");
    let d = g.date();
    n.phi(C::Date, &d);
    n.t(". ");
    filler(g, &mut n, 2);
    n.t("She was last seen by Dr. ");
    let doc_last = g.last();
    n.phi(C::Person, &doc_last);
    n.t(" on ");
    let d = g.date();
    n.phi(C::Date, &d);
    n.t(". ");
    filler(g, &mut n, 2);
    n.t("\n\nSocial: Lives at ");
    let street = g.street();
    n.phi(C::StreetAddress, &street);
    if g.r.chance(0.3) {
        n.t(", ");
        let unit = format!("Apt {}", g.r.range(1, 40));
        n.phi(C::StreetAddress, &unit);
    }
    n.t(", ");
    let city = g.city();
    n.phi(C::City, &city);
    n.t(", ");
    let st = g.state();
    n.t(&st);
    n.t(" ");
    let zip = g.zip();
    n.phi(C::ZipCode, &zip);
    let rel = ["wife", "husband", "daughter", "son", "niece", "neighbor"][g.r.below(6)];
    n.t(&format!(" with her {rel} "));
    let relative = g.full();
    n.phi(C::Person, &relative);
    n.t(". ");
    if g.r.chance(0.5) {
        n.t("Grew up in ");
        let c2 = g.city();
        n.phi(C::City, &c2);
        n.t(" and worked as a teacher until 1998. ");
    }
    n.t("Contact ");
    let rf = relative.split(' ').next().unwrap_or("").to_owned();
    n.phi(C::Person, &rf);
    n.t(" at ");
    let ph = g.phone();
    n.phi(C::Phone, &ph);
    n.t(" or ");
    let em = format!(
        "{}.{}{}@{}",
        rf.to_lowercase(),
        g.last().to_lowercase(),
        g.r.range(1, 99),
        ["gmail.com", "yahoo.com", "outlook.com", "mail.example.org"][g.r.below(4)]
    );
    n.phi(C::Email, &em);
    n.t(". ");
    filler(g, &mut n, 1);
    // Insurance and billing.
    n.t("\n\nInsurance: ");
    match g.r.below(4) {
        0 => {
            n.t("Medicare ID ");
            let m = g.mbi();
            n.phi(C::HealthPlan, &m);
        }
        1 => {
            n.t("member ID: ");
            let m = format!("{}{}", g.r.letters(3), g.r.digits(9));
            n.phi(C::HealthPlan, &m);
        }
        2 => {
            n.t("BCBS policy # ");
            let m = format!("{}-{}-{}", g.r.digits(2), g.r.digits(5), g.r.digits(2));
            n.phi(C::HealthPlan, &m);
        }
        _ => {
            n.t("subscriber ID ");
            let m = format!("W{}", g.r.digits(10));
            n.phi(C::HealthPlan, &m);
        }
    }
    n.t(". SSN ");
    let s = g.ssn();
    n.phi(C::Ssn, &s);
    n.t(". Billing acct # ");
    let a = g.r.digits(10);
    n.phi(C::Account, &a);
    match g.r.below(2) {
        0 => {
            n.t("; card on file ");
            let c = g.card();
            n.phi(C::CreditCard, &c);
        }
        _ => {
            n.t("; refunds to IBAN ");
            let i = g.iban();
            n.phi(C::Iban, &i);
        }
    }
    n.t(".\n\n");
    // Providers, licences.
    n.t("Attending: ");
    let att = g.full();
    n.phi(C::Person, &att);
    n.t(", MD, NPI ");
    let npi = g.npi();
    n.phi(C::License, &npi);
    n.t(", DEA ");
    let dea = g.dea();
    n.phi(C::License, &dea);
    n.t(". Fax records to ");
    let fx = g.phone();
    n.phi(C::Fax, &fx);
    n.t(". ");
    if g.r.chance(0.5) {
        n.t("Driver's license ");
        let dl = format!("{}{}", g.r.letters(1), g.r.digits(7));
        n.phi(C::License, &dl);
        n.t(" verified at check-in. ");
    }
    // Vehicle, device, web, biometrics, other IDs.
    n.t("\n\n");
    match g.r.below(2) {
        0 => {
            n.t("Involved in an MVC; vehicle VIN ");
            let v = g.vin();
            n.phi(C::Vehicle, &v);
            n.t(", license plate ");
            let p = format!("{}{}{}", g.r.range(1, 9), g.r.letters(3), g.r.digits(3));
            n.phi(C::Vehicle, &p);
            n.t(". ");
        }
        _ => {
            n.t("Drives a 2015 Honda, vehicle ");
            let v = g.vin();
            n.phi(C::Vehicle, &v);
            n.t(". ");
        }
    }
    match g.r.below(3) {
        0 => {
            n.t("Pacemaker serial number ");
            let sn = format!("{}{}{}", g.r.letters(3), g.r.digits(6), g.r.letters(1));
            n.phi(C::Device, &sn);
        }
        1 => {
            n.t("Insulin pump S/N ");
            let sn = format!("{}-{}", g.r.digits(4), g.r.letters(2));
            n.phi(C::Device, &sn);
        }
        _ => {
            n.t("Phone IMEI ");
            let im = g.imei();
            n.phi(C::Device, &im);
        }
    }
    n.t(". ");
    if g.r.chance(0.3) {
        n.t("Device UDI ");
        let u = format!(
            "(01){}(17){}(10){}",
            g.r.digits(14),
            g.r.digits(6),
            g.r.digits(6)
        );
        n.phi(C::Device, &u);
        n.t(". ");
    }
    n.t("Portal: ");
    let url = if g.r.chance(0.5) {
        format!(
            "https://portal.{}health.org/patients/{}",
            g.last().to_lowercase(),
            g.r.digits(6)
        )
    } else {
        format!("www.{}{}.com", pt_first.to_lowercase(), g.r.range(10, 99))
    };
    n.phi(C::Url, &url);
    n.t(", last login from ");
    let ip = if g.r.chance(0.7) { g.ipv4() } else { g.ipv6() };
    n.phi(C::IpAddress, &ip);
    n.t(". ");
    let bio = [
        ("Fingerprint ID ", "FP"),
        ("Voiceprint enrollment ", "VP"),
        ("Retinal scan ID ", "RS"),
    ][g.r.below(3)];
    n.t(bio.0);
    let b = format!("{}-{}-{}", bio.1, g.r.digits(4), g.r.digits(4));
    n.phi(C::Biometric, &b);
    n.t(" on file. ");
    match g.r.below(3) {
        0 => {
            n.t("Claim number ");
            let c = format!("CLM-{}-{}", g.r.range(2015, 2024), g.r.digits(5));
            n.phi(C::Id, &c);
        }
        1 => {
            n.t("Accession #");
            let c = format!("S{}-{}", g.r.range(10, 24), g.r.digits(5));
            n.phi(C::Id, &c);
        }
        _ => {
            n.t("Passport number ");
            let c = g.r.digits(9);
            n.phi(C::Id, &c);
        }
    }
    n.t(".\n\n");
    filler(g, &mut n, 2);
    n.t("Next visit ");
    let d = g.date();
    n.phi(C::Date, &d);
    n.t(". ");
    n.phi(C::Person, &pt_first);
    n.t(" agrees with the plan. ");
    filler(g, &mut n, 1);
    n.t("\nSigned: ");
    let rn = g.full();
    n.phi(C::Person, &rn);
    n.t(", RN\n");
    Doc {
        text: n.text,
        gold: n.gold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_notes_and_spans_are_in_bounds() {
        let a = generate_notes(7, 20);
        assert_eq!(a, generate_notes(7, 20));
        assert_ne!(a, generate_notes(8, 20));
        for d in &a {
            for g in &d.gold {
                assert!(d.text.is_char_boundary(g.start) && d.text.is_char_boundary(g.end));
                assert!(g.start < g.end && g.end <= d.text.len());
            }
        }
    }

    #[test]
    fn every_safe_harbor_category_occurs() {
        let docs = generate_notes(42, 200);
        let mut seen = crate::CategorySet::empty();
        for d in &docs {
            for g in &d.gold {
                if let GoldLabel::Phi(c) = g.label {
                    seen = seen.with(c);
                }
            }
        }
        for c in Category::ALL {
            assert!(seen.contains(c), "{c} never generated");
        }
    }

    #[test]
    fn identifiers_carry_valid_check_digits() {
        let mut g = Gen {
            r: Rng(1),
            p: Pools::new(),
        };
        for _ in 0..50 {
            assert!(crate::checks::vin(g.vin().as_bytes()));
            assert!(crate::checks::iban(g.iban().as_bytes()));
            assert!(crate::checks::npi(g.npi().as_bytes()));
            assert!(crate::checks::dea(g.dea().as_bytes()));
            assert!(crate::checks::luhn(g.imei().as_bytes()));
            let m: String = g.mbi().chars().filter(|c| *c != '-').collect();
            assert!(crate::checks::mbi(m.as_bytes()), "{m}");
        }
    }
}
