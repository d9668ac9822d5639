//! The compiled-in dictionaries: census names, common English words, places, street words and
//! the context keywords, merged into one hash map from a lower-case word to what it can be,
//! so that classifying a word costs one lookup.
//!
//! The lists under `data/` are embedded with `include_str!` and parsed once, on first use,
//! into a process-wide table ([`dict`]); nothing is read from disk or the network.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

/// A 1990 US Census first name.
pub(crate) const FIRST: u32 = 1 << 0;
/// A 1990 US Census surname (the most frequent 30,000).
pub(crate) const LAST: u32 = 1 << 1;
/// A common English word (SCOWL, lower-case entries).
pub(crate) const ENGLISH: u32 = 1 << 2;
/// A proper noun that is not a person: place, people, brand, month, weekday.
pub(crate) const PROPER: u32 = 1 << 3;
/// A US city (a whole single-word name, or a whole multi-word name joined by spaces).
pub(crate) const CITY: u32 = 1 << 4;
/// The first word of a multi-word US city, country or state name.
pub(crate) const PLACE_HEAD: u32 = 1 << 5;
/// A country (not PHI: Safe Harbor removes only places smaller than a state).
pub(crate) const COUNTRY: u32 = 1 << 6;
/// A US state or territory name.
pub(crate) const STATE: u32 = 1 << 7;
/// A US state or territory postal code (`ca`, `ny`, `ae`).
pub(crate) const STATE_CODE: u32 = 1 << 8;
/// A street suffix (`street`, `ave`, `blvd`).
pub(crate) const STREET_SUFFIX: u32 = 1 << 9;
/// A word that comes before a street name in many languages (`rue`, `via`, `calle`, `ul`).
pub(crate) const STREET_PREFIX: u32 = 1 << 10;
/// A unit designator (`apt`, `suite`, `unit`).
pub(crate) const UNIT: u32 = 1 << 11;
/// A personal title (`dr`, `mr`, `mrs`).
pub(crate) const TITLE: u32 = 1 << 12;
/// A word that ends an organisation's name (`inc`, `hospital`, `university`).
pub(crate) const ORG: u32 = 1 << 13;
/// A capitalised word of clinical text that is not a person (eponyms, drug brands).
pub(crate) const MEDICAL: u32 = 1 << 14;
/// A month name or abbreviation.
pub(crate) const MONTH: u32 = 1 << 15;
/// A weekday.
pub(crate) const WEEKDAY: u32 = 1 << 16;
/// A professional credential written after a name (`md`, `rn`, `phd`).
pub(crate) const CREDENTIAL: u32 = 1 << 17;
/// A word before a name that says a person follows (`patient`, `wife`, `hi`).
pub(crate) const ROLE: u32 = 1 << 18;
/// A word after a name that says it was a person (`said`, `reports`).
pub(crate) const PERSON_VERB: u32 = 1 << 19;
/// A particle inside surnames (`van`, `de`, `von`).
pub(crate) const PARTICLE: u32 = 1 << 20;
/// A word that may stand between a keyword and its value (`number`, `is`, `the`).
pub(crate) const FILLER: u32 = 1 << 21;
/// A word that announces an address (`lives`, `address`, `located`).
pub(crate) const ADDRESS_CUE: u32 = 1 << 22;
/// A preposition or verb after which a place name is likely (`in`, `from`, `near`).
pub(crate) const PLACE_CUE: u32 = 1 << 23;
/// A connective or preposition that often comes before a name (`and`, `with`, `by`).
pub(crate) const WEAK_ROLE: u32 = 1 << 24;
/// A pronoun or other function word: capitalised at sentence starts, never a name here.
pub(crate) const FUNCTION: u32 = 1 << 25;
/// Among the 400 most frequent census first names.
pub(crate) const COMMON_FIRST: u32 = 1 << 26;
/// Among the 3,000 most frequent census surnames.
pub(crate) const COMMON_LAST: u32 = 1 << 27;
/// A head noun after an eponym ("syndrome", "sign", "nodes").
pub(crate) const EPONYM_HEAD: u32 = 1 << 28;
/// A dose unit or a word that follows a drug's name ("mg", "daily", "stopped").
pub(crate) const DRUG_AFTER: u32 = 1 << 29;
/// A word that comes before a drug's name ("started", "treated", "taking").
pub(crate) const DRUG_BEFORE: u32 = 1 << 30;
/// A word of clinical notes that is not a name on its own: an abbreviation, a section header,
/// a drug, device, procedure or lab, ward shorthand, a telegraphic opener ("Pt", "NEURO",
/// "Propofol", "Foley", "Will"; `data/clinical_hand.txt` and `data/drugs_unii.txt`).
pub(crate) const CLINICAL: u32 = 1 << 31;

/// Flags of the short context lists. Lower-case words are looked up only in the small table
/// of words that carry one of these (or a keyword or month), which stays in cache; the big
/// table (names, English, places) is for capitalised words and for the few checks that ask.
const SMALL_FLAGS: u32 = STREET_SUFFIX
    | STREET_PREFIX
    | UNIT
    | TITLE
    | ORG
    | MONTH
    | WEEKDAY
    | CREDENTIAL
    | ROLE
    | PERSON_VERB
    | PARTICLE
    | FILLER
    | ADDRESS_CUE
    | PLACE_CUE
    | WEAK_ROLE
    | FUNCTION
    | EPONYM_HEAD
    | DRUG_AFTER
    | DRUG_BEFORE;

/// What a keyword says about the value that follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ctx {
    None = 0,
    Mrn,
    HealthPlan,
    Account,
    Card,
    License,
    Npi,
    Dea,
    Vin,
    Plate,
    Device,
    Imei,
    Biometric,
    Ssn,
    Phone,
    Fax,
    Date,
    Age,
    Zip,
    Id,
    Passport,
}

impl Ctx {
    /// Keywords whose next identifier-like value is claimed for their category whatever its
    /// shape (phones, dates and ZIPs are recognised by shape and only scored by context).
    pub fn claims_value(self) -> bool {
        matches!(
            self,
            Ctx::Mrn
                | Ctx::HealthPlan
                | Ctx::Account
                | Ctx::License
                | Ctx::Npi
                | Ctx::Dea
                | Ctx::Vin
                | Ctx::Plate
                | Ctx::Device
                | Ctx::Imei
                | Ctx::Biometric
                | Ctx::Id
                | Ctx::Passport
        )
    }

    /// Generic keywords (`ID`, `number`) give way to a more specific one before them
    /// (`member ID`, `policy number`).
    pub fn is_generic(self) -> bool {
        matches!(self, Ctx::Id)
    }
}

/// Everything known about one lower-case word, packed into one integer so that it is passed,
/// returned and cached as one machine word: the flags in the low 32 bits, then the keyword
/// ([`Ctx`] as a number), the month (1–12 for month words) and the cache level, a byte
/// each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct WordInfo(u64);

const CTX_SHIFT: u32 = 32;
const MONTH_SHIFT: u32 = 40;
const LEVEL_SHIFT: u32 = 48;

impl WordInfo {
    pub fn has(self, f: u32) -> bool {
        self.0 & u64::from(f) != 0
    }
    /// The flags (`FIRST`, `LAST` …).
    pub fn flags(self) -> u32 {
        self.0 as u32
    }
    /// The keyword, as its number (0 for none).
    pub fn ctx_code(self) -> u8 {
        (self.0 >> CTX_SHIFT) as u8
    }
    pub fn ctx(self) -> Ctx {
        CTX_BY_NUM
            .get(usize::from(self.ctx_code()))
            .copied()
            .unwrap_or(Ctx::None)
    }
    /// 1–12 for month words, else 0.
    pub fn month(self) -> u8 {
        (self.0 >> MONTH_SHIFT) as u8
    }
    /// How much of the dictionary a scan's per-token cache has looked at for this entry:
    /// 0 nothing, 1 the context lists, 2 everything. Always 0 in the dictionary itself.
    pub fn level(self) -> u8 {
        (self.0 >> LEVEL_SHIFT) as u8
    }
    #[must_use]
    pub fn with_level(self, level: u8) -> Self {
        WordInfo(self.0 & !(0xff << LEVEL_SHIFT) | u64::from(level) << LEVEL_SHIFT)
    }
    fn add_flags(&mut self, f: u32) {
        self.0 |= u64::from(f);
    }
    fn set_ctx(&mut self, c: Ctx) {
        self.0 = self.0 & !(0xff << CTX_SHIFT) | u64::from(c as u8) << CTX_SHIFT;
    }
    fn set_month(&mut self, m: u8) {
        self.0 = self.0 & !(0xff << MONTH_SHIFT) | u64::from(m) << MONTH_SHIFT;
    }
}

const CTX_BY_NUM: [Ctx; 21] = [
    Ctx::None,
    Ctx::Mrn,
    Ctx::HealthPlan,
    Ctx::Account,
    Ctx::Card,
    Ctx::License,
    Ctx::Npi,
    Ctx::Dea,
    Ctx::Vin,
    Ctx::Plate,
    Ctx::Device,
    Ctx::Imei,
    Ctx::Biometric,
    Ctx::Ssn,
    Ctx::Phone,
    Ctx::Fax,
    Ctx::Date,
    Ctx::Age,
    Ctx::Zip,
    Ctx::Id,
    Ctx::Passport,
];

/// FxHash (rustc's hasher): a multiply-rotate per 8 bytes, several times faster than SipHash
/// on short keys. The keys are compiled-in words, so hash flooding is not a concern.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.add(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut a = [0u8; 8];
            a[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(a));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// The merged dictionary.
pub(crate) struct Dict {
    /// Every entry of up to 16 ASCII bytes, keyed by its bytes packed into an integer: the
    /// common case costs one multiply to hash and no string comparison.
    packed: Compact,
    /// Longer entries, non-ASCII ones and multi-word phrases.
    long: HashMap<&'static str, WordInfo, FxBuild>,
    /// The entries that carry a context flag, a keyword or a month, packed likewise (the
    /// few longer ones are in `small_long`).
    small: Compact,
    small_long: HashMap<&'static str, WordInfo, FxBuild>,
    /// One bit per (length, first letter, last letter) that some small entry has: most
    /// words are ruled out without hashing.
    small_filter: [u64; 256],
    /// The same for the few words that start a shape on their own in lower case: units,
    /// street prefixes, months.
    interest_filter: [u64; 256],
    /// The same for surname particles (`van`, `de`).
    particle_filter: [u64; 256],
    /// The same for role words (`patient`, `wife`).
    role_filter: [u64; 256],
}

/// An open-addressing table from a packed word to its facts, four bytes a slot: a 20-bit
/// fingerprint and a 12-bit index into the few thousand distinct facts. The 117,000 words
/// fit in 1 MiB, so lookups mostly hit the cache (a general-purpose map of the same words
/// took 8 MiB and missed twice a lookup). A fingerprint can match a word that is not in the
/// table with probability about 2^-20 per probe; the cost is one word misread, never a
/// crash.
struct Compact {
    slots: Vec<u32>,
    mask: usize,
    values: Vec<WordInfo>,
}

const FP_BITS: u32 = 20;
const IDX_BITS: u32 = 32 - FP_BITS;

/// One multiply and a shift: the keys are short words, not adversarial input, and the
/// lookup's latency sits in this chain.
fn mix(key: u128) -> u64 {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 31)
}

impl Compact {
    /// The home slot and the (never zero) fingerprint of a key.
    fn place(&self, key: u128) -> (usize, u32) {
        let h = mix(key);
        let fp = ((h >> 40) as u32 & ((1 << FP_BITS) - 1)).max(1);
        (h as usize & self.mask, fp)
    }

    fn build(entries: &HashMap<u128, WordInfo, FxBuild>) -> Compact {
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut values: Vec<WordInfo> = Vec::new();
        let mut index: HashMap<WordInfo, u32, FxBuild> = HashMap::default();
        let mut t = Compact {
            slots: vec![0; cap],
            mask: cap - 1,
            values: Vec::new(),
        };
        for (&k, &v) in entries {
            let idx = *index.entry(v).or_insert_with(|| {
                values.push(v);
                (values.len() - 1) as u32
            });
            // More distinct facts than the index holds would be a data change to review;
            // they are dropped rather than misread.
            if idx >= 1 << IDX_BITS {
                continue;
            }
            let (mut i, fp) = t.place(k);
            while t.slots[i] != 0 {
                i = (i + 1) & t.mask;
            }
            t.slots[i] = fp << IDX_BITS | idx;
        }
        t.values = values;
        t
    }

    fn get(&self, key: u128) -> Option<WordInfo> {
        let (mut i, fp) = self.place(key);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s >> IDX_BITS == fp {
                return self
                    .values
                    .get((s & ((1 << IDX_BITS) - 1)) as usize)
                    .copied();
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Packs up to 16 ASCII bytes, lower-cased, into an integer (none of the bytes is zero, so
/// different words never pack alike). `None` for longer or non-ASCII input.
pub(crate) fn pack_lower(w: &[u8]) -> Option<u128> {
    // The lexer never puts NUL inside a word, so zero padding cannot collide.
    if w.len() > 16 || w.is_empty() || !w.is_ascii() {
        return None;
    }
    let mut buf = [0u8; 16];
    for (d, c) in buf.iter_mut().zip(w) {
        *d = c.to_ascii_lowercase();
    }
    Some(u128::from_le_bytes(buf))
}

/// [`pack_lower`] for a word of 1–16 ASCII letters (no digits, no other bytes) at
/// `text[start..start + len]`: one unaligned 16-byte load, a mask and an OR that lower-cases
/// every letter at once (for letters, lower case is the upper with bit 5 set).
#[inline]
pub(crate) fn pack_letters(text: &[u8], start: usize, len: usize) -> u128 {
    let len = len.min(16);
    let raw = match text.get(start..).and_then(|r| r.first_chunk::<16>()) {
        Some(w) => u128::from_le_bytes(*w),
        None => pack_tail(text, start),
    };
    (raw | 0x2020_2020_2020_2020_2020_2020_2020_2020) & LOW_BYTES[len]
}

/// The bytes from `start` of a text that ends less than 16 bytes after it (the caller masks
/// off what follows the word): the text's last 16 bytes, shifted.
#[inline]
fn pack_tail(text: &[u8], start: usize) -> u128 {
    let n = text.len();
    let (last16, first) = match text.last_chunk::<16>() {
        Some(w) => (u128::from_le_bytes(*w), n - 16),
        // A text shorter than 16 bytes, little-endian.
        None => (
            text.iter()
                .rev()
                .fold(0u128, |acc, &c| (acc << 8) | u128::from(c)),
            0,
        ),
    };
    let shift = start.saturating_sub(first).min(15);
    last16 >> (8 * shift)
}

/// `LOW_BYTES[n]`: the low `n` bytes of a `u128` set.
static LOW_BYTES: [u128; 17] = {
    let mut t = [0u128; 17];
    let mut n = 1;
    while n <= 16 {
        t[n] = u128::MAX >> (8 * (16 - n));
        n += 1;
    }
    t
};

/// The filter slot of a word (ASCII letters, any case; others share slots harmlessly).
fn filter_slot(w: &[u8]) -> usize {
    match (w.first(), w.last()) {
        (Some(&f), Some(&l)) => {
            ((w.len() & 15) << 10) | (usize::from(f & 31) << 5) | usize::from(l & 31)
        }
        _ => 0,
    }
}

impl Dict {
    /// What `lower` (already lower-cased) is; the default (no flags) when unknown.
    pub fn get(&self, lower: &str) -> WordInfo {
        match pack_lower(lower.as_bytes()) {
            Some(k) => self.packed.get(k),
            None => self.long.get(lower).copied(),
        }
        .unwrap_or_default()
    }

    /// [`Dict::get`] for a key already packed as [`pack_lower`] packs it.
    pub fn get_packed(&self, key: u128) -> WordInfo {
        self.packed.get(key).unwrap_or_default()
    }

    /// What the word with these raw bytes is, in any case; `None` when it is not ASCII or
    /// longer than 16 bytes (then lower-case it and use [`Dict::get`]).
    pub fn get_raw(&self, raw: &[u8], small_only: bool) -> Option<WordInfo> {
        if small_only && raw.len() <= 16 && !self.may_be_small_raw(raw) {
            return Some(WordInfo::default());
        }
        let k = pack_lower(raw)?;
        if small_only {
            return Some(self.small.get(k).unwrap_or_default());
        }
        Some(self.packed.get(k).unwrap_or_default())
    }

    /// [`Dict::get_raw`] for the word of 1–16 ASCII letters at `text[start..start + len]`.
    #[inline(always)]
    pub fn get_letters(&self, text: &[u8], start: usize, len: usize, small_only: bool) -> WordInfo {
        if small_only {
            // The filter slot of `filter_slot` (`& 31` ignores case), tested before the word
            // is packed: about a third of the words asked for are ruled out here.
            let first = text.get(start).copied().unwrap_or(0);
            let last = text.get(start + len - 1).copied().unwrap_or(0);
            let slot = ((len & 15) << 10) | (usize::from(first & 31) << 5) | usize::from(last & 31);
            if self.small_filter[slot >> 6] & (1 << (slot & 63)) == 0 {
                return WordInfo::default();
            }
            return self
                .small
                .get(pack_letters(text, start, len))
                .unwrap_or_default();
        }
        self.packed
            .get(pack_letters(text, start, len))
            .unwrap_or_default()
    }

    /// Like [`Dict::get`], but only for words of the short context lists: everything else
    /// reads as unknown. Cheap enough for every lower-case neighbour of a candidate.
    pub fn get_small(&self, lower: &str) -> WordInfo {
        if !self.may_be_small_raw(lower.as_bytes()) {
            return WordInfo::default();
        }
        match pack_lower(lower.as_bytes()) {
            Some(k) => self.small.get(k),
            None => self.small_long.get(lower).copied(),
        }
        .unwrap_or_default()
    }

    /// Whether a word (any ASCII case) could be a unit, a street prefix or a month (no false
    /// negatives; a few false positives, which the lookup then settles).
    pub fn may_interest(&self, w: &[u8]) -> bool {
        let slot = filter_slot(w);
        self.interest_filter[slot >> 6] & (1 << (slot & 63)) != 0
    }

    /// Whether a word (any ASCII case) could be a surname particle (no false negatives).
    pub fn may_be_particle(&self, w: &[u8]) -> bool {
        let slot = filter_slot(w);
        self.particle_filter[slot >> 6] & (1 << (slot & 63)) != 0
    }

    /// Whether a word (any ASCII case) could be a role word (no false negatives).
    pub fn may_be_role(&self, w: &[u8]) -> bool {
        let slot = filter_slot(w);
        self.role_filter[slot >> 6] & (1 << (slot & 63)) != 0
    }

    /// Whether a word (any ASCII case) could be in the small table (no false negatives).
    fn may_be_small_raw(&self, w: &[u8]) -> bool {
        let slot = filter_slot(w);
        self.small_filter[slot >> 6] & (1 << (slot & 63)) != 0
    }
}

static FIRST_NAMES: &str = include_str!("../data/first_names.txt");
static SURNAMES: &str = include_str!("../data/surnames.txt");
static ENGLISH_WORDS: &str = include_str!("../data/english.txt");
static PROPER_NONPERSON: &str = include_str!("../data/proper_nonperson.txt");
static US_CITIES: &str = include_str!("../data/us_cities.txt");
static US_STATES: &str = include_str!("../data/us_states.txt");
static COUNTRIES: &str = include_str!("../data/countries.txt");
static STREET_SUFFIXES: &str = include_str!("../data/street_suffixes.txt");
static CLINICAL_HAND: &str = include_str!("../data/clinical_hand.txt");
static DRUGS_UNII: &str = include_str!("../data/drugs_unii.txt");

/// Words written before a street name (Romance, Slavic and other languages) and in English
/// (`avenue of`, `calle`, `rue`).
const STREET_PREFIXES: &[&str] = &[
    "rue",
    "via",
    "viale",
    "vicolo",
    "piazza",
    "piazzale",
    "corso",
    "largo",
    "strada",
    "calle",
    "carrer",
    "carrera",
    "avenida",
    "avda",
    "av",
    "paseo",
    "camino",
    "rua",
    "travessa",
    "praça",
    "praca",
    "estrada",
    "alameda",
    "rodovia",
    "boulevard",
    "bd",
    "bld",
    "chemin",
    "allée",
    "impasse",
    "quai",
    "route",
    "place",
    "ul",
    "ulica",
    "ulice",
    "aleja",
    "al",
    "plac",
    "os",
    "osiedle",
    "trg",
    "utca",
    "strasse",
    "straße",
    "rruga",
    "odos",
    "bulevardul",
    "bulevar",
    "str",
    "sokak",
    "cadde",
    "jalan",
    "jl",
    "calzada",
    "avinguda",
    "rambla",
    "ronda",
    "travesía",
    "cesta",
    "ulitsa",
    "prospekt",
    "piazzetta",
    "rúa",
    "r",
];

/// Endings of one-word street names in Nordic, Germanic, Baltic and other languages
/// (`Koskikatu`, `Hammarvägen`, `Brixtonlaan`, `Mellemvej`, `Pohlstrasse`).
pub(crate) const STREET_ENDINGS: &[&str] = &[
    "katu", "kuja", "tie", "polku", "väylä", "kaari", "rinne", "raitti", "tori", "aukio", "gatan",
    "gata", "vägen", "väg", "gränd", "stigen", "torget", "backen", "veien", "vegen", "gate", "veg",
    "vei", "stien", "vej", "gade", "stræde", "plads", "vænget", "straße", "strasse", "str", "weg",
    "allee", "platz", "gasse", "gass", "damm", "ufer", "ring", "straat", "laan", "plein", "gracht",
    "kade", "dijk", "singel", "steeg", "vegur", "stræti", "braut", "tún", "tänav", "mnt", "iela",
    "gatvė", "utca", "út", "útja", "tér", "u", "cesta", "ulica", "ulice", "rakpart", "körút",
    "sokak", "brücke", "tee", "sokağı", "caddesi",
];

const UNITS: &[&str] = &[
    "apt",
    "apartment",
    "suite",
    "ste",
    "unit",
    "bldg",
    "building",
    "floor",
    "fl",
    "room",
    "rm",
    "lot",
    "trlr",
    "dept",
    "po",
    "box",
    "p",
    "post",
    "postbox",
    "postfach",
    "cmr",
    "usns",
    "uss",
    "usnv",
    "uscgc",
    "uscgs",
    "psc",
    "apo",
    "fpo",
    "dpo",
];

const TITLES: &[&str] = &[
    "dr",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "prof",
    "professor",
    "sir",
    "dame",
    "madam",
    "madame",
    "mme",
    "mlle",
    "herr",
    "frau",
    "señor",
    "señora",
    "sr",
    "sra",
    "rev",
    "fr",
    "reverend",
    "lady",
    "lord",
    "doctor",
];

const ORG_WORDS: &[&str] = &[
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "llc",
    "llp",
    "ltd",
    "limited",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "group",
    "holdings",
    "partners",
    "associates",
    "technologies",
    "technology",
    "systems",
    "solutions",
    "software",
    "labs",
    "laboratories",
    "bank",
    "hospital",
    "clinic",
    "center",
    "centre",
    "university",
    "college",
    "school",
    "institute",
    "foundation",
    "society",
    "association",
    "department",
    "services",
    "pharmacy",
    "pharmaceuticals",
    "health",
    "healthcare",
    "medical",
    "insurance",
    "orchestra",
    "church",
    "museum",
    "agency",
    "committee",
    "council",
    "media",
    "records",
    "research",
    "consulting",
    "capital",
    "ventures",
    "network",
    "networks",
];

/// Capitalised words of clinical text that are not people: eponymous diseases, signs, scales
/// and devices, and common drug brands. Hand-written (facts, not copied text).
const MEDICAL_WORDS: &[&str] = &[
    "alzheimer",
    "alzheimers",
    "parkinson",
    "parkinsons",
    "crohn",
    "crohns",
    "hodgkin",
    "hodgkins",
    "addison",
    "addisons",
    "cushing",
    "cushings",
    "graves",
    "hashimoto",
    "bell",
    "bells",
    "kaposi",
    "wilms",
    "tourette",
    "tourettes",
    "asperger",
    "aspergers",
    "huntington",
    "huntingtons",
    "lou",
    "gehrig",
    "guillain",
    "barre",
    "barré",
    "raynaud",
    "raynauds",
    "sjogren",
    "sjögren",
    "sjogrens",
    "reiter",
    "marfan",
    "down",
    "turner",
    "klinefelter",
    "epstein",
    "barr",
    "creutzfeldt",
    "jakob",
    "meniere",
    "menieres",
    "bartholin",
    "baker",
    "bakers",
    "colles",
    "dupuytren",
    "osgood",
    "schlatter",
    "paget",
    "pagets",
    "peyronie",
    "wernicke",
    "korsakoff",
    "wolff",
    "white",
    "tetralogy",
    "fallot",
    "kawasaki",
    "lyme",
    "babinski",
    "murphy",
    "murphys",
    "mcburney",
    "mcburneys",
    "homan",
    "homans",
    "romberg",
    "kernig",
    "brudzinski",
    "trendelenburg",
    "tinel",
    "phalen",
    "lachman",
    "apgar",
    "glasgow",
    "braden",
    "morse",
    "wells",
    "gleason",
    "breslow",
    "clark",
    "nyha",
    "child",
    "pugh",
    "foley",
    "swan",
    "ganz",
    "hickman",
    "broviac",
    "groshong",
    "jackson",
    "pratt",
    "penrose",
    "coude",
    "mallampati",
    "heimlich",
    "valsalva",
    "doppler",
    "holter",
    "pap",
    "gram",
    "ziehl",
    "neelsen",
    "wright",
    "giemsa",
    "coombs",
    "schilling",
    "whipple",
    "nissen",
    "billroth",
    "roux",
    "hartmann",
    "bankart",
    "hill",
    "sachs",
    "tay",
    "ewing",
    "ewings",
    "burkitt",
    "burkitts",
    "wilson",
    "wilsons",
    "gilbert",
    "gilberts",
    "fanconi",
    "von",
    "willebrand",
    "lipitor",
    "crestor",
    "zocor",
    "pravachol",
    "norvasc",
    "lasix",
    "coumadin",
    "warfarin",
    "eliquis",
    "xarelto",
    "pradaxa",
    "plavix",
    "brilinta",
    "metformin",
    "glucophage",
    "januvia",
    "jardiance",
    "farxiga",
    "ozempic",
    "trulicity",
    "victoza",
    "mounjaro",
    "lantus",
    "humalog",
    "novolog",
    "levemir",
    "tresiba",
    "synthroid",
    "levoxyl",
    "prilosec",
    "nexium",
    "protonix",
    "pepcid",
    "zantac",
    "zoloft",
    "prozac",
    "lexapro",
    "celexa",
    "paxil",
    "wellbutrin",
    "cymbalta",
    "effexor",
    "xanax",
    "ativan",
    "klonopin",
    "valium",
    "ambien",
    "seroquel",
    "abilify",
    "risperdal",
    "zyprexa",
    "haldol",
    "depakote",
    "lamictal",
    "keppra",
    "dilantin",
    "tegretol",
    "neurontin",
    "lyrica",
    "tylenol",
    "advil",
    "motrin",
    "aleve",
    "aspirin",
    "norco",
    "vicodin",
    "percocet",
    "oxycontin",
    "dilaudid",
    "tramadol",
    "ultram",
    "narcan",
    "suboxone",
    "zofran",
    "phenergan",
    "reglan",
    "colace",
    "senna",
    "miralax",
    "dulcolax",
    "flomax",
    "proscar",
    "cialis",
    "viagra",
    "singulair",
    "albuterol",
    "proair",
    "ventolin",
    "advair",
    "symbicort",
    "spiriva",
    "flovent",
    "prednisone",
    "medrol",
    "decadron",
    "augmentin",
    "keflex",
    "cipro",
    "levaquin",
    "zithromax",
    "bactrim",
    "flagyl",
    "vancomycin",
    "zosyn",
    "rocephin",
    "diflucan",
    "valtrex",
    "tamiflu",
    "paxlovid",
    "humira",
    "enbrel",
    "remicade",
    "keytruda",
    "opdivo",
    "herceptin",
    "avastin",
    "gleevec",
    "neulasta",
    "epogen",
    "procrit",
    "lovenox",
    "heparin",
    "toprol",
    "lopressor",
    "coreg",
    "tenormin",
    "zestril",
    "prinivil",
    "vasotec",
    "diovan",
    "cozaar",
    "benicar",
    "hyzaar",
    "aldactone",
    "lanoxin",
    "cardizem",
    "imdur",
    "nitrostat",
    "entresto",
    "xeljanz",
    "otezla",
    "dupixent",
    "botox",
    "epipen",
    "benadryl",
    "claritin",
    "zyrtec",
    "allegra",
    "flonase",
    "sudafed",
    "mucinex",
    "robitussin",
    "imodium",
    "pepto",
    "bismol",
    "tums",
    "gaviscon",
    "vitamin",
    "ensure",
    "glucerna",
    "covid",
    "sars",
    "cov",
    "hiv",
    "aids",
    "mrsa",
    "vre",
    "cdiff",
    "rsv",
    "ebv",
    "cmv",
    "zimmer",
    "biomet",
    "medtronic",
    "stryker",
    "abbott",
    "dexcom",
    "omnipod",
    "tandem",
    "philips",
    "na",
    "cl",
    "cr",
    "hgb",
    "hct",
    "wbc",
    "plt",
    "inr",
    "ptt",
    "alt",
    "ast",
    "alk",
    "tsh",
    "bun",
    "mg",
    "phos",
    "ldl",
    "hdl",
    "bnp",
    "crp",
    "esr",
    "spo",
    "hba",
    "ecog",
    "nyha",
    "asa",
    "honda",
    "toyota",
    "chevrolet",
    "chevy",
    "nissan",
    "hyundai",
    "kia",
    "subaru",
    "mazda",
    "lexus",
    "tesla",
    "audi",
    "volkswagen",
    "jeep",
    "dodge",
    "chrysler",
    "buick",
    "cadillac",
    "volvo",
    "acura",
    "infiniti",
    "mitsubishi",
    "porsche",
    "google",
    "apple",
    "microsoft",
    "amazon",
    "facebook",
    "iphone",
    "ipad",
    "android",
    "samsung",
    "epic",
    "cerner",
    "mychart",
    "walgreens",
    "cvs",
    "walmart",
    "costco",
    "uber",
    "lyft",
    "zoom",
    "teams",
    "skype",
];

const CREDENTIALS: &[&str] = &[
    "md", "do", "rn", "np", "pa", "phd", "dds", "dmd", "lpn", "cna", "msw", "lcsw", "pharmd",
    "dnp", "aprn", "crna", "mph", "mba", "esq", "jr", "sr", "ii", "iii", "iv", "facp", "facs",
    "faap", "od", "dpm", "dc", "pt", "ot", "slp", "rph", "rd", "bsn", "msn", "fnp",
];

/// Words before a name that say a person follows.
const ROLES: &[&str] = &[
    "patient",
    "pt",
    "pts",
    "wife",
    "husband",
    "son",
    "daughter",
    "dtr",
    "dau",
    "sis",
    "bro",
    "hcp",
    "nok",
    "mother",
    "father",
    "mom",
    "dad",
    "brother",
    "sister",
    "sibling",
    "grandson",
    "granddaughter",
    "grandmother",
    "grandfather",
    "grandma",
    "grandpa",
    "aunt",
    "uncle",
    "niece",
    "nephew",
    "cousin",
    "friend",
    "partner",
    "spouse",
    "fiance",
    "fiancee",
    "boyfriend",
    "girlfriend",
    "guardian",
    "caregiver",
    "neighbor",
    "neighbour",
    "roommate",
    "employer",
    "boss",
    "coworker",
    "colleague",
    "nurse",
    "physician",
    "doctor",
    "provider",
    "attending",
    "resident",
    "intern",
    "fellow",
    "surgeon",
    "therapist",
    "pharmacist",
    "dentist",
    "counselor",
    "psychiatrist",
    "psychologist",
    "cardiologist",
    "oncologist",
    "pcp",
    "np",
    "pa",
    "rn",
    "md",
    "named",
    "name",
    "names",
    "called",
    "call",
    "calls",
    "hi",
    "hello",
    "hey",
    "dear",
    "thanks",
    "thank",
    "cc",
    "signed",
    "contact",
    "spoke",
    "told",
    "asked",
    "mr",
    "mrs",
    "ms",
    "dr",
    "mx",
    "miss",
    "im",
    "visited",
    "accompanied",
    "producer",
    "director",
    "directed",
    "written",
    "songwriter",
    "singer",
    "player",
    "author",
    "artist",
    "actor",
    "actress",
    "writer",
    "editor",
    "reporter",
    "manager",
    "ceo",
    "founder",
    "founders",
    "chef",
    "coach",
    "captain",
    "officer",
    "agent",
    "lawyer",
    "attorney",
    "judge",
    "senator",
    "president",
    "minister",
    "governor",
    "mayor",
    "tribute",
    "married",
    "son-in-law",
    "beneficiary",
    "guarantor",
    "subscriber",
    "insured",
    "emergency",
    "kin",
    "informant",
    "historian",
    "interpreter",
    "witness",
    "sponsor",
    "donor",
    "recipient",
    "referred",
    "referring",
    "seen",
    "examined",
    "evaluated",
    "treated",
    "discussed",
    "notified",
    "paged",
    "consulted",
    "appointment",
    "visit",
    "ex",
    "dated",
];

/// Weaker cues before a name: connectives and prepositions that often precede one.
const WEAK_ROLES: &[&str] = &[
    "and",
    "or",
    "nor",
    "for",
    "about",
    "than",
    "like",
    "as",
    "with",
    "per",
    "by",
    "is",
    "this",
    "am",
    "meet",
    "met",
    "ask",
    "ex",
    "marry",
    "including",
    "featuring",
    "features",
    "starring",
    "tribute",
    "says",
    "said",
];

/// Words after a name that say it was a person.
const PERSON_VERBS: &[&str] = &[
    "said",
    "says",
    "say",
    "reports",
    "reported",
    "reporting",
    "states",
    "stated",
    "denies",
    "denied",
    "endorses",
    "endorsed",
    "complains",
    "complained",
    "presents",
    "presented",
    "notes",
    "noted",
    "explains",
    "explained",
    "agrees",
    "agreed",
    "declined",
    "declines",
    "tolerated",
    "was",
    "is",
    "has",
    "had",
    "will",
    "would",
    "lives",
    "lived",
    "works",
    "worked",
    "wrote",
    "writes",
    "sang",
    "sings",
    "told",
    "asked",
    "called",
    "visited",
    "died",
    "passed",
    "arrived",
    "left",
    "flew",
    "married",
    "listed",
    "recorded",
    "thinks",
    "thought",
    "feels",
    "felt",
    "wants",
    "wanted",
    "needs",
    "needed",
    "returned",
    "returns",
    "underwent",
    "received",
    "receives",
    "takes",
    "took",
    "continues",
    "remains",
    "appears",
    "seems",
    "signed",
    "spent",
    "who",
    "whose",
    "herself",
    "himself",
    "began",
    "begins",
    "started",
    "starts",
    "shouted",
    "shouts",
    "spoke",
    "speaks",
    "joined",
    "joins",
    "won",
    "became",
    "becomes",
    "met",
    "meets",
    "moved",
    "went",
    "goes",
    "came",
    "comes",
    "saw",
    "tried",
    "plays",
    "played",
    "announced",
    "released",
    "published",
    "founded",
    "directed",
    "produced",
    "performed",
    "sang",
    "wrote",
    "writes",
    "sent",
    "gave",
    "gives",
    "got",
    "gets",
    "made",
    "makes",
    "did",
    "does",
    "can",
    "could",
    "should",
    "may",
    "might",
    "must",
    "shall",
    "believes",
    "believed",
    "knows",
    "knew",
    "loves",
    "loved",
    "likes",
    "liked",
    "lost",
    "bought",
    "sold",
    "paid",
    "pays",
    "agrees",
    "declined",
    "admitted",
    "discharged",
    "smiled",
    "laughed",
    "cried",
    "replied",
    "answered",
    "added",
    "insisted",
    "argued",
    "claimed",
];

/// Head nouns after an eponym: "X syndrome", "X's sign", "X nodes".
const EPONYM_HEADS: &[&str] = &[
    "syndrome",
    "disease",
    "sign",
    "signs",
    "triad",
    "criteria",
    "nodes",
    "node",
    "lesions",
    "lesion",
    "spots",
    "pattern",
    "block",
    "score",
    "scale",
    "respirations",
    "breathing",
    "test",
    "maneuver",
    "manoeuvre",
    "reflex",
    "phenomenon",
    "catheter",
    "frame",
    "palsy",
    "tumor",
    "tumour",
    "classification",
    "procedure",
    "operation",
    "repair",
    "fracture",
    "ulcer",
    "law",
    "rule",
    "index",
    "method",
    "technique",
    "equation",
    "formula",
    "disorder",
    "anomaly",
    "deformity",
    "murmur",
    "stage",
    "grade",
    "type",
    "cyst",
    "class",
    "virus",
    "stain",
    "smear",
    "ultrasound",
    "study",
    "monitor",
    "monitoring",
    "fundoplication",
    "thyroiditis",
    "encephalopathy",
    "leukemia",
    "contracture",
    "position",
    "incision",
    "approach",
    "valve",
    "shunt",
    "tube",
    "drain",
    "stent",
    "pen",
    "inhaler",
    "ellipta",
    "lymphoma",
    "sarcoma",
    "carcinoma",
    "cells",
    "cell",
    "bodies",
    "body",
    "fibers",
    "duct",
    "ligament",
    "nerve",
    "artery",
    "vein",
    "space",
    "canal",
    "gland",
    "membrane",
    "sinus",
    "area",
    "protocol",
];

/// Dose units after a number: "Toujeo 20 units", "Rybelsus 7 mg".
const DOSE_UNITS: &[&str] = &[
    "mg", "mcg", "g", "ml", "units", "unit", "iu", "puff", "puffs", "tab", "tabs", "tablet",
    "tablets", "capsule", "capsules", "drops", "meq", "mmol",
];

/// Words after a drug's name: how it is taken, or what was done with it.
const DRUG_AFTER_WORDS: &[&str] = &[
    "daily",
    "nightly",
    "bid",
    "tid",
    "qid",
    "qhs",
    "prn",
    "twice",
    "once",
    "stopped",
    "started",
    "added",
    "discontinued",
    "increased",
    "decreased",
    "tapered",
    "held",
    "resumed",
    "titrated",
    "restarted",
    "injection",
    "injections",
    "infusion",
    "dose",
    "doses",
    "dosing",
    "one",
    "two",
];

/// Words before a drug's name: "treated with", "started", "on".
const DRUG_BEFORE_WORDS: &[&str] = &[
    "treated",
    "managed",
    "controlled",
    "maintained",
    "started",
    "start",
    "starting",
    "continue",
    "continued",
    "continuing",
    "taking",
    "takes",
    "took",
    "prescribed",
    "added",
    "switched",
    "tried",
    "trial",
    "improved",
    "failed",
    "stopped",
    "restarted",
    "resumed",
    "discontinued",
];

/// Pronouns and other function words that are capitalised at sentence starts and are never
/// names here ("He", "You", "The"), whatever the census says.
const FUNCTION_WORDS: &[&str] = &[
    "he", "she", "you", "we", "they", "it", "me", "him", "her", "his", "hers", "our", "us", "them",
    "their", "this", "that", "these", "those", "there", "here", "what", "who", "when", "where",
    "why", "how", "which", "the", "an", "and", "or", "but", "if", "so", "no", "yes", "not", "all",
    "any", "some", "my", "your", "its", "number", "per", "by", "in", "on", "at", "to", "of", "for",
    "with", "from", "as", "is", "was", "are", "be", "do", "did", "has",
];

const PARTICLES: &[&str] = &[
    "van", "von", "de", "der", "den", "del", "della", "delle", "di", "da", "das", "dos", "do",
    "du", "la", "le", "ten", "ter", "bin", "ibn", "al", "el", "st", "mac", "y", "af", "zu", "nad",
    "pod", "na", "am", "im", "sur", "sous", "les",
];

/// Words that may stand between a keyword and its value.
const FILLERS: &[&str] = &[
    "number",
    "numbers",
    "no",
    "num",
    "nbr",
    "nr",
    "id",
    "is",
    "was",
    "are",
    "were",
    "be",
    "of",
    "the",
    "a",
    "an",
    "his",
    "her",
    "my",
    "your",
    "our",
    "their",
    "its",
    "new",
    "old",
    "primary",
    "secondary",
    "listed",
    "reads",
    "read",
    "please",
    "me",
    "us",
    "him",
    "them",
    "at",
    "on",
    "to",
    "as",
    "code",
    "here",
    "here's",
    "it",
    "it's",
    "on file",
    "file",
    "for",
    "under",
    "with",
    "card",
    "home",
    "work",
    "office",
    "main",
    "direct",
    "personal",
    "cell",
    "mobile",
    "desk",
    "numb",
    "confirmed",
    "verified",
    "changed",
    "updated",
    "current",
    "previous",
    "reach",
    "using",
    "this",
    "that",
    "following",
    "ending",
    "in",
    "enrollment",
    "enrolled",
    "scan",
    "template",
    "sample",
    "print",
    "hash",
    "assigned",
    "issued",
    "state",
];

const ADDRESS_CUES: &[&str] = &[
    "address",
    "addr",
    "lives",
    "live",
    "living",
    "resides",
    "reside",
    "residing",
    "residence",
    "located",
    "moved",
    "ship",
    "shipped",
    "send",
    "sent",
    "deliver",
    "delivered",
    "mail",
    "mailing",
    "home",
    "street",
    "visit",
    "stop",
    "meet",
    "corner",
    "drops",
    "at",
];

const PLACE_CUES: &[&str] = &[
    "in",
    "from",
    "near",
    "to",
    "of",
    "at",
    "around",
    "outside",
    "visiting",
    "lives",
    "living",
    "resident",
    "native",
    "born",
    "moved",
    "travelled",
    "traveled",
    "traveling",
    "travelling",
    "flew",
    "drove",
    "returned",
    "arrived",
    "based",
    "city",
    "town",
    "village",
    "county",
];

const KEYWORDS: &[(&str, Ctx)] = &[
    ("mrn", Ctx::Mrn),
    ("mrno", Ctx::Mrn),
    ("chart", Ctx::Mrn),
    ("emr", Ctx::Mrn),
    ("ehr", Ctx::Mrn),
    ("member", Ctx::HealthPlan),
    ("subscriber", Ctx::HealthPlan),
    ("beneficiary", Ctx::HealthPlan),
    ("policy", Ctx::HealthPlan),
    ("policyholder", Ctx::HealthPlan),
    ("insurance", Ctx::HealthPlan),
    ("insurer", Ctx::HealthPlan),
    ("medicare", Ctx::HealthPlan),
    ("medicaid", Ctx::HealthPlan),
    ("mbi", Ctx::HealthPlan),
    ("hicn", Ctx::HealthPlan),
    ("payer", Ctx::HealthPlan),
    ("group", Ctx::HealthPlan),
    ("bcbs", Ctx::HealthPlan),
    ("aetna", Ctx::HealthPlan),
    ("cigna", Ctx::HealthPlan),
    ("humana", Ctx::HealthPlan),
    ("anthem", Ctx::HealthPlan),
    ("tricare", Ctx::HealthPlan),
    ("unitedhealthcare", Ctx::HealthPlan),
    ("account", Ctx::Account),
    ("accounts", Ctx::Account),
    ("acct", Ctx::Account),
    ("billing", Ctx::Account),
    ("bank", Ctx::Account),
    ("routing", Ctx::Account),
    ("aba", Ctx::Account),
    ("fin", Ctx::Account),
    ("har", Ctx::Account),
    ("card", Ctx::Card),
    ("cc", Ctx::Card),
    ("visa", Ctx::Card),
    ("mastercard", Ctx::Card),
    ("amex", Ctx::Card),
    ("credit", Ctx::Card),
    ("debit", Ctx::Card),
    ("license", Ctx::License),
    ("licence", Ctx::License),
    ("lic", Ctx::License),
    ("dl", Ctx::License),
    ("cdl", Ctx::License),
    ("certificate", Ctx::License),
    ("cert", Ctx::License),
    ("certification", Ctx::License),
    ("permit", Ctx::License),
    ("npi", Ctx::Npi),
    ("dea", Ctx::Dea),
    ("vin", Ctx::Vin),
    ("plate", Ctx::Plate),
    ("plates", Ctx::Plate),
    ("tag", Ctx::Plate),
    ("serial", Ctx::Device),
    ("sn", Ctx::Device),
    ("device", Ctx::Device),
    ("udi", Ctx::Device),
    ("implant", Ctx::Device),
    ("pacemaker", Ctx::Device),
    ("defibrillator", Ctx::Device),
    ("pump", Ctx::Device),
    ("stimulator", Ctx::Device),
    ("neurostimulator", Ctx::Device),
    ("model", Ctx::Device),
    ("lot", Ctx::Device),
    ("imei", Ctx::Imei),
    ("meid", Ctx::Imei),
    ("esn", Ctx::Imei),
    ("fingerprint", Ctx::Biometric),
    ("fingerprints", Ctx::Biometric),
    ("thumbprint", Ctx::Biometric),
    ("voiceprint", Ctx::Biometric),
    ("voiceprints", Ctx::Biometric),
    ("retinal", Ctx::Biometric),
    ("retina", Ctx::Biometric),
    ("iris", Ctx::Biometric),
    ("palmprint", Ctx::Biometric),
    ("faceprint", Ctx::Biometric),
    ("biometric", Ctx::Biometric),
    ("biometrics", Ctx::Biometric),
    ("ssn", Ctx::Ssn),
    ("ss", Ctx::Ssn),
    ("social", Ctx::Ssn),
    ("security", Ctx::Ssn),
    ("phone", Ctx::Phone),
    ("phones", Ctx::Phone),
    ("telephone", Ctx::Phone),
    ("tel", Ctx::Phone),
    ("ph", Ctx::Phone),
    ("mobile", Ctx::Phone),
    ("cell", Ctx::Phone),
    ("cellphone", Ctx::Phone),
    ("call", Ctx::Phone),
    ("text", Ctx::Phone),
    ("sms", Ctx::Phone),
    ("contact", Ctx::Phone),
    ("reach", Ctx::Phone),
    ("desk", Ctx::Phone),
    ("pager", Ctx::Phone),
    ("beeper", Ctx::Phone),
    ("landline", Ctx::Phone),
    ("whatsapp", Ctx::Phone),
    ("dial", Ctx::Phone),
    ("answering", Ctx::Phone),
    ("messages", Ctx::Phone),
    ("registered", Ctx::Phone),
    ("fax", Ctx::Fax),
    ("facsimile", Ctx::Fax),
    ("telefax", Ctx::Fax),
    ("dob", Ctx::Date),
    ("birth", Ctx::Date),
    ("born", Ctx::Date),
    ("birthday", Ctx::Date),
    ("birthdate", Ctx::Date),
    ("date", Ctx::Date),
    ("dated", Ctx::Date),
    ("admitted", Ctx::Date),
    ("admission", Ctx::Date),
    ("discharged", Ctx::Date),
    ("discharge", Ctx::Date),
    ("seen", Ctx::Date),
    ("visit", Ctx::Date),
    ("since", Ctx::Date),
    ("until", Ctx::Date),
    ("till", Ctx::Date),
    ("through", Ctx::Date),
    ("dos", Ctx::Date),
    ("doa", Ctx::Date),
    ("dod", Ctx::Date),
    ("died", Ctx::Date),
    ("death", Ctx::Date),
    ("scheduled", Ctx::Date),
    ("appointment", Ctx::Date),
    ("surgery", Ctx::Date),
    ("returned", Ctx::Date),
    ("last", Ctx::Date),
    ("next", Ctx::Date),
    ("effective", Ctx::Date),
    ("expires", Ctx::Date),
    ("expiry", Ctx::Date),
    ("exp", Ctx::Date),
    ("expiration", Ctx::Date),
    ("age", Ctx::Age),
    ("aged", Ctx::Age),
    ("turned", Ctx::Age),
    ("turning", Ctx::Age),
    ("turn", Ctx::Age),
    ("zip", Ctx::Zip),
    ("zipcode", Ctx::Zip),
    ("postal", Ctx::Zip),
    ("postcode", Ctx::Zip),
    ("plz", Ctx::Zip),
    ("id", Ctx::Id),
    ("ids", Ctx::Id),
    ("identifier", Ctx::Id),
    ("ident", Ctx::Id),
    ("accession", Ctx::Id),
    ("case", Ctx::Id),
    ("claim", Ctx::Id),
    ("reference", Ctx::Id),
    ("ref", Ctx::Id),
    ("ticket", Ctx::Id),
    ("badge", Ctx::Id),
    ("employee", Ctx::Id),
    ("student", Ctx::Id),
    ("specimen", Ctx::Id),
    ("requisition", Ctx::Id),
    ("encounter", Ctx::Id),
    ("confirmation", Ctx::Id),
    ("tracking", Ctx::Id),
    ("csn", Ctx::Id),
    ("uid", Ctx::Id),
    ("voucher", Ctx::Id),
    ("order", Ctx::Id),
    ("invoice", Ctx::Id),
    ("passport", Ctx::Passport),
];

const MONTHS: &[(&str, u8)] = &[
    ("january", 1),
    ("jan", 1),
    ("february", 2),
    ("feb", 2),
    ("march", 3),
    ("mar", 3),
    ("april", 4),
    ("apr", 4),
    ("may", 5),
    ("june", 6),
    ("jun", 6),
    ("july", 7),
    ("jul", 7),
    ("august", 8),
    ("aug", 8),
    ("september", 9),
    ("sep", 9),
    ("sept", 9),
    ("october", 10),
    ("oct", 10),
    ("november", 11),
    ("nov", 11),
    ("december", 12),
    ("dec", 12),
];

const WEEKDAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "mon",
    "tue",
    "tues",
    "wed",
    "thu",
    "thur",
    "thurs",
    "fri",
    "sat",
    "sun",
];

fn lines(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn build() -> Dict {
    let mut words: HashMap<&'static str, WordInfo, FxBuild> =
        HashMap::with_capacity_and_hasher(120_000, FxBuild::default());
    let mut add = |w: &'static str, f: u32| {
        words.entry(w).or_default().add_flags(f);
    };
    for w in lines(ENGLISH_WORDS) {
        add(w, ENGLISH);
    }
    for w in lines(PROPER_NONPERSON) {
        add(w, PROPER);
    }
    for w in lines(COUNTRIES) {
        add(w, COUNTRY | PROPER);
        if let Some((head, _)) = w.split_once(' ') {
            add(head, PLACE_HEAD);
        }
    }
    for w in lines(US_CITIES) {
        add(w, CITY);
        if let Some((head, _)) = w.split_once(' ') {
            add(head, PLACE_HEAD);
        }
    }
    for row in lines(US_STATES) {
        if let Some((code, name)) = row.split_once('\t') {
            add(code, STATE_CODE);
            add(name, STATE | PROPER);
            if let Some((head, _)) = name.split_once(' ') {
                add(head, PLACE_HEAD);
            }
        }
    }
    for w in lines(STREET_SUFFIXES) {
        add(w, STREET_SUFFIX);
    }
    for w in lines(CLINICAL_HAND).chain(lines(DRUGS_UNII)) {
        add(w, CLINICAL);
    }
    let lists: [(&[&'static str], u32); 12] = [
        (MEDICAL_WORDS, MEDICAL),
        (STREET_PREFIXES, STREET_PREFIX),
        (UNITS, UNIT),
        (TITLES, TITLE),
        (ORG_WORDS, ORG),
        (WEEKDAYS, WEEKDAY | PROPER),
        (CREDENTIALS, CREDENTIAL),
        (ROLES, ROLE),
        (PERSON_VERBS, PERSON_VERB),
        (PARTICLES, PARTICLE),
        (FILLERS, FILLER),
        (ADDRESS_CUES, ADDRESS_CUE),
    ];
    for (list, f) in lists {
        for &w in list {
            add(w, f);
        }
    }
    for &w in PLACE_CUES {
        add(w, PLACE_CUE);
    }
    for &w in WEAK_ROLES {
        add(w, WEAK_ROLE);
    }
    for (rank, w) in lines(FIRST_NAMES).enumerate() {
        let e = words.entry(w).or_default();
        e.add_flags(FIRST);
        if rank < 400 {
            e.add_flags(COMMON_FIRST);
        }
    }
    for (rank, w) in lines(SURNAMES).enumerate() {
        let e = words.entry(w).or_default();
        e.add_flags(LAST);
        if rank < 3000 {
            e.add_flags(COMMON_LAST);
        }
    }
    for &(w, m) in MONTHS {
        let e = words.entry(w).or_default();
        e.add_flags(MONTH | PROPER);
        e.set_month(m);
    }
    for &(w, c) in KEYWORDS {
        words.entry(w).or_default().set_ctx(c);
    }
    for &w in FUNCTION_WORDS {
        words.entry(w).or_default().add_flags(FUNCTION);
    }
    for (list, f) in [
        (EPONYM_HEADS, EPONYM_HEAD),
        (DOSE_UNITS, DRUG_AFTER),
        (DRUG_AFTER_WORDS, DRUG_AFTER),
        (DRUG_BEFORE_WORDS, DRUG_BEFORE),
    ] {
        for &w in list {
            words.entry(w).or_default().add_flags(f);
        }
    }
    let mut packed = HashMap::with_capacity_and_hasher(words.len(), FxBuild::default());
    let mut long = HashMap::with_hasher(FxBuild::default());
    let mut small = HashMap::with_hasher(FxBuild::default());
    let mut small_long = HashMap::with_hasher(FxBuild::default());
    let mut small_filter = [0u64; 256];
    let mut interest_filter = [0u64; 256];
    let mut particle_filter = [0u64; 256];
    let mut role_filter = [0u64; 256];
    for (w, i) in words {
        if i.has(UNIT | STREET_PREFIX) || i.month() != 0 {
            let slot = filter_slot(w.as_bytes());
            interest_filter[slot >> 6] |= 1 << (slot & 63);
        }
        if i.has(PARTICLE) {
            let slot = filter_slot(w.as_bytes());
            particle_filter[slot >> 6] |= 1 << (slot & 63);
        }
        if i.has(ROLE) {
            let slot = filter_slot(w.as_bytes());
            role_filter[slot >> 6] |= 1 << (slot & 63);
        }
        let is_small = i.has(SMALL_FLAGS) || i.ctx_code() != 0 || i.month() != 0;
        match pack_lower(w.as_bytes()) {
            Some(k) => {
                packed.insert(k, i);
                if is_small {
                    small.insert(k, i);
                }
            }
            None => {
                long.insert(w, i);
                if is_small {
                    small_long.insert(w, i);
                }
            }
        }
        if is_small {
            let slot = filter_slot(w.as_bytes());
            small_filter[slot >> 6] |= 1 << (slot & 63);
        }
    }
    Dict {
        packed: Compact::build(&packed),
        long,
        small: Compact::build(&small),
        small_long,
        small_filter,
        interest_filter,
        particle_filter,
        role_filter,
    }
}

static DICT: LazyLock<Dict> = LazyLock::new(build);

/// The process-wide dictionary, built on first use (a few milliseconds).
pub(crate) fn dict() -> &'static Dict {
    &DICT
}

/// Lower-cases `s` into `buf` (reused across calls to avoid allocating) and returns it.
pub(crate) fn lower_into<'a>(s: &str, buf: &'a mut String) -> &'a str {
    buf.clear();
    if s.is_ascii() {
        buf.push_str(s);
        buf.make_ascii_lowercase();
    } else {
        for c in s.chars() {
            crate::lex::push_lower(buf, c);
        }
    }
    buf.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lookup_tells_what_a_word_can_be() {
        let d = dict();
        let mary = d.get("mary");
        assert!(mary.has(FIRST) && mary.has(COMMON_FIRST));
        assert!(d.get("smith").has(LAST) && d.get("smith").has(COMMON_LAST));
        assert!(d.get("zzqx").flags() == 0 && !d.get("kowalczykowska").has(COMMON_LAST));
        let brown = d.get("brown");
        assert!(brown.has(LAST) && brown.has(ENGLISH), "brown is both");
        assert!(d.get("boston").has(CITY));
        assert!(d.get("ny").has(STATE_CODE));
        assert!(d.get("france").has(COUNTRY));
        assert!(d.get("blvd").has(STREET_SUFFIX));
        assert_eq!(d.get("mrn").ctx(), Ctx::Mrn);
        assert_eq!(d.get("march").month(), 3);
        assert_eq!(d.get("zzqx").flags(), 0);
    }

    #[test]
    fn the_small_table_has_context_words_only() {
        let d = dict();
        for w in ["fax", "mrn", "account", "january", "street", "wife", "said"] {
            assert!(
                d.get_small(w).flags() != 0 || d.get_small(w).ctx_code() != 0,
                "{w}"
            );
        }
        assert_eq!(d.get_small("mary").flags(), 0);
        assert!(d.get_raw(b"MARY", false).is_some_and(|i| i.has(FIRST)));
        assert!(d.get_raw(b"Fax", true).is_some_and(|i| i.ctx() == Ctx::Fax));
        assert!(d.get_raw("Zoë".as_bytes(), false).is_none());
        assert!(d.get("los angeles").has(CITY), "phrases are found too");
        assert!(d.get("mary").has(FIRST));
    }

    #[test]
    fn the_compact_table_holds_every_word() {
        let d = dict();
        assert!(
            d.packed.values.len() < 1 << IDX_BITS,
            "{}",
            d.packed.values.len()
        );
        for w in lines(ENGLISH_WORDS)
            .chain(lines(SURNAMES))
            .chain(lines(FIRST_NAMES))
        {
            if let Some(k) = pack_lower(w.as_bytes()) {
                assert!(d.packed.get(k).is_some(), "{w}");
            }
        }
    }

    #[test]
    fn the_clinical_vocabulary_is_no_name_and_the_table_stays_small() {
        let d = dict();
        for w in [
            "pt",
            "neuro",
            "propofol",
            "dopamine",
            "captopril",
            "levo",
            "foley",
            "vent",
        ] {
            assert!(d.get(w).has(CLINICAL), "{w}");
        }
        // Words that are also names keep their name flags beside it.
        assert!(d.get("will").has(CLINICAL) && d.get("will").has(FIRST));
        assert!(d.get("foley").has(LAST));
        // 1 MiB of slots (a power of two at most half full): the lookups' working set.
        assert!(d.packed.slots.len() <= 1 << 18, "{}", d.packed.slots.len());
    }

    #[test]
    fn lowercasing_reuses_the_buffer() {
        let mut buf = String::new();
        assert_eq!(lower_into("McDonald", &mut buf), "mcdonald");
        assert_eq!(lower_into("ŽELJKO", &mut buf), "željko");
    }
}
