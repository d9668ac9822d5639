//! A seeded generator of labelled ICU and ward nursing notes: telegraphic, abbreviated,
//! system by system (`NEURO:`, `CV:`, `RESP:` …), often all in capitals, full of drug,
//! device, procedure and lab shorthand and of numbers that look like dates or addresses
//! (`PSV 10/5`, `BP 120/80`, `ABG 7.38/42/98`, `AC 500x14`, `K 3.6`), with the identifiers
//! such notes carry: relatives' and clinicians' first names alone, sometimes in lower case
//! (`wife Mary`, `son bill`), clinicians' surnames and initials after a role (`Dr. B.`),
//! hospitals, nursing homes and wards named in full, alone or abbreviated (`transferred from
//! Sacred Heart`, `from GH`), dates, phone numbers, and ages over 89.
//!
//! Written from general knowledge of how such notes read, not from any real corpus (the
//! PhysioNet `deid` nursing notes are the project's held-out yardstick and are never used to
//! develop against). The clinical phrases are this module's own; names, cities and surnames
//! come from the same pools as [`super::generate_notes`] (half of them in none of the
//! detector's lists). The same seed always gives the same notes.

use super::Doc;
use super::notes::{Gen, Note, Pools, Rng, title_case};
use crate::Category;

/// The systems of a note, each with phrases to draw from. In a phrase, `{a-b}` is a number
/// drawn from `a..=b` (`{a.b-c.d}` with one decimal), `{x|y|z}` one of the words, `{time}` a
/// 24-hour time, and `<SLOT>` an identifier (see [`slot`]).
const SYSTEMS: &[(&str, &[&str])] = &[
    (
        "Neuro",
        &[
            "A&Ox{1|2|3}, MAE, follows commands. PERRL {2|3|4}mm brisk. ",
            "Sedated on propofol {10-50}mcg/kg/min, RASS {-3|-2|-1|0}. Opens eyes to voice, MAE. ",
            "Lethargic but arousable, oriented to self only. Will follow simple commands intermittently. ",
            "Pt alert, forgetful, reoriented frequently. Given haldol {1|2|5}mg IV x1 for agitation with good effect. ",
            "No sedation. Fentanyl {25|50|100}mcg/hr for pain, pain {2-8}/10 with turns. ",
            "CIWA {4-20}, ativan {1|2}mg IV given x{1|2}. Still tremulous. ",
            "Precedex gtt @ {0.2|0.4|0.7}mcg/kg/hr, calm and cooperative. ",
            "Gag/cough intact. PERL. Moves all extremities to command. ",
            "Versed {1|2}mg IVP prn, sleeping in naps. Keep sedation holiday in am. ",
            "Nonverbal, grimaces to pain. Tylenol {650|1000}mg given for HA with relief. ",
        ],
    ),
    (
        "CV",
        &[
            "HR {60-120} {NSR|ST|SB|AFib} with occasional PVCs. BP {90-160}/{40-90}, MAP {60-90}. ",
            "Levo gtt titrated {0.02-0.20} mcg/kg/min to keep MAP >{60|65}. Weaned off at {time}. ",
            "SBP {90-180}'s. Lopressor {5|12.5|25}mg given. Captopril {6.25|12.5|25}mg PO TID. ",
            "K {3.1-5.2}, repleted with {20|40}meq KCl. Mg {1.4-2.4}, 2gm mag sulfate given. ",
            "Nitro gtt @ {10-200}mcg/min for CP, now pain free. Heparin gtt @ {800-1500}u/hr, PTT {40-110}. ",
            "Dopamine @ {2-10}mcg/kg/min, weaning as tol. Pulses palp bilat. +{1|2|3} edema LE. ",
            "A-line intact, correlates with cuff. CVP {4-18}. ",
            "Tele {NSR|SR|AF} {60-110}s, no ectopy. Amio gtt @ {0.5|1}mg/min. ",
            "Neo gtt off since {time}. Dobutamine {2.5|5}mcg/kg/min, CI {1.8-3.2}. ",
            "Hydral {10|20}mg IV x1 for SBP >{160|170|180}, good effect. ",
        ],
    ),
    (
        "Resp",
        &[
            "Remains intubated on AC {400-600}x{12-24}, PEEP {5|8|10}, FiO2 {40|50|60}%. ABG 7.{28-48}/{30-60}/{60-150}. ",
            "Vent changed to PSV {5|8|10|12}/{5|8}, tol well, RR {14-28}, TV {350-600}'s. ",
            "LS {clear|coarse|diminished} bilat, suctioned for {small|mod|large} amts thick {tan|white|yellow} secretions. ",
            "On {2|3|4|6}L NC, sats {92-100}%. Using IS, cough weak. ",
            "Extubated at {time} to {40|50}% face tent, tol well. ",
            "Trach to {35|40|50}% trach mask, sx q{2|3|4}h for thick secretions. ",
            "BiPAP {10|12}/{5|6} overnight, on NC during day. Sats {90-99}%. ",
            "CPAP {5|10}/{5|8} with FiO2 {40|50}%, RSBI {40-120}. SBT in am. ",
            "CXR with ? LLL infiltrate. Albuterol/atrovent nebs q4h. ",
        ],
    ),
    (
        "GI",
        &[
            "Abd soft, NT/ND, +BS. TF {Promote|Jevity|Nepro|Osmolite} @ {20-70}cc/hr via {OGT|NGT|PEG}, residuals <{30|50|100}cc. ",
            "NPO for procedure. Protonix IV. No BM, colace/senna given. ",
            "Tolerating clear liquids, advance diet as tol. Lg loose BM x{1|2|3}, C diff sent. ",
            "Abd distended, firm. KUB done. OGT to LWS draining bilious fluid. ",
            "Guaiac + brown stool. Protonix gtt @ {8|10}mg/hr. ",
            "Taking sips, tol meds crushed in applesauce. Lactulose {20|30}gm given. ",
        ],
    ),
    (
        "GU",
        &[
            "Foley draining {clear|cloudy|amber} yellow urine {20-150}cc/hr. Lasix {20|40|80}mg IV given with good response. ",
            "BUN/Cr {10-80}/{0.6-4.5}. UO {10-60}cc/hr. CVVH running, {50-200}cc/hr net neg. ",
            "Voiding qs via urinal. Foley d/c'd at {time}, DTV by {time}. ",
            "UO marginal {15-30}cc/hr, fluid bolus {250|500}cc NS given. I/O {800-3000}/{400-2500}. ",
            "HD today, {1-3}L removed. Renal following. ",
        ],
    ),
    (
        "Endo",
        &[
            "FS {80-350}, covered per RISS. Insulin gtt @ {1-12}u/hr per protocol. ",
            "BS {100-250}s, glargine {10-40}u qhs. ",
            "Cont on stress dose steroids, hydrocortisone {50|100}mg IV q8h. ",
        ],
    ),
    (
        "Heme",
        &[
            "Hct {21.0-35.0}, transfused 1u PRBC. Plt {20-300}. INR {1.0-3.5}. On SQ heparin. ",
            "Hct stable {25.0-32.0}. Coags WNL. Pneumoboots on. ",
        ],
    ),
    (
        "ID",
        &[
            "Tmax {98.0-103.5}. WBC {4.0-25.0}. On vanco/zosyn, vanco trough {10-25} pending. BCx x2 sent. ",
            "Afebrile. Cont cefepime and flagyl day {2-14}. ",
            "Tmax {99.0-102.5} po, cultured. Cipro started. MRSA swab sent. ",
        ],
    ),
    (
        "Skin",
        &[
            "Intact. Turned q2h. Coccyx {red|reddened|stage 2}, duoderm applied. ",
            "Sacral decub stage {2|3}, wound care per WCN. ",
            "Multiple ecchymoses on arms. Heels floated. ",
        ],
    ),
    (
        "Access",
        &[
            "R IJ TLC, L radial A-line, PIV x{1|2}. ",
            "PICC L arm, site c/d/i. Art line R fem. ",
        ],
    ),
];

/// Telegraphic sentences that fit anywhere in a note.
const TELEGRAPHIC: &[&str] = &[
    "Will cont to monitor closely. ",
    "Given tylenol {650|1000}mg PR for temp. ",
    "Tolerating TF well. ",
    "Good UO. ",
    "Still on levo at {0.02-0.10}. ",
    "Keep K >4, Mg >2. ",
    "See flowsheet for details. ",
    "Remains on vent. ",
    "Awaiting bed on floor. ",
    "Able to take pills whole. ",
    "Following commands. ",
    "Appears comfortable. ",
    "Denies pain. ",
    "Resting comfortably, in naps. ",
    "Cont to wean FiO2 as tol. ",
    "Turned and repositioned q2h. ",
    "MD aware. ",
    "Needs K {20|40}meq repleted. ",
    "VS: T {97.0-101.9} HR {60-120} BP {90-170}/{40-95} RR {12-30} SpO2 {90-100}% on {RA|2L NC|vent}. ",
    "LOS +{1-10}L. ",
    "Pain {0-10}/10, morphine {2|4}mg IV given. ",
];

/// Sentences with identifiers in them.
const WITH_PHI: &[&str] = &[
    "{Wife|Husband|Daughter|Son|Sister} <FIRST> in to visit, updated on plan of care. ",
    "Wife <FIRST> called, updated by RN. Son <first> to visit in am. ",
    "Family meeting with Dr. <DRLAST> on <DATE>, pt now DNR/DNI. ",
    "Lives with {wife|husband|daughter} <FIRST> in <CITY>. ",
    "Dtr <FIRST> (HCP) {called|visited}, phone <PHONE>. ",
    "Spoke with {son|dtr|wife} <first>, aware of transfer. ",
    "{Wife|Husband|Daughter} <FIRST> and {daughter|son|sister} <FIRST> at bedside most of shift. ",
    "Dr. <DRLAST> aware. ",
    "NP <FIRST> notified of SBP {80-90}'s. ",
    "Resident <FIRST> aware, no new orders. ",
    "Per Dr <DRLAST>, cont current plan. ",
    "Report given to RN <INIT> ",
    "Dr. <INIT> aware of K {3.0-3.4}. ",
    "Seen by renal (Dr. <DRLAST>), HD in am. ",
    "Ortho (Dr. <INIT>) in to see pt. ",
    "Plan to transfer to <HOSP> for rehab when bed available. ",
    "Pt from <HOSP>, baseline {ambulatory|bedbound|OOB to chair}. ",
    "Came up from EW at {time}. To <WARD> when bed available. ",
    "Seen at <HABBR> ED {2|3|5} days ago, sent here on <DATE>. ",
    "Pt returned from <HOSP> at {time}, VSS. ",
    "Case mgmt to call <HOSP> re: screening. ",
    "Mr. <LAST> seen by chaplain. ",
    "Son <FIRST> is HCP, can be reached at <PHONE>. ",
    "Sister <first> and niece <first> called for update. ",
    "Covering MD <FIRST> paged re: BP. ",
    "Last BM <DATE>. ",
    "Trach placed <DATE> at <HABBR>. ",
];

/// First lines: where the patient came from.
const OPENINGS: &[&str] = &[
    "Pt transferred from <HOSP> on <DATE> for further mgmt of {resp failure|GI bleed|sepsis|CHF}. ",
    "Pt is a <AGE90> yo {M|F} transferred from <HABBR> with {PNA|UGIB|NSTEMI|COPD flare}. ",
    "Pt is a {45-88} yo {M|F} transferred from <HOSP> with {PNA|UGIB|NSTEMI|COPD flare}. ",
    "{62-88} yo {M|F} admitted from EW with {hypotension|hypoxia|AMS}. ",
    "Pt admitted to MICU from <HABBR> on <DATE>. ",
];

/// Closing lines.
const PLAN: &[&str] = &[
    "Wean vent as tol, SBT in am. Cont abx. Keep NPO after MN for {EGD|bronch|TEE|IR}. ",
    "Cont to monitor and support. Full code. ",
    "Titrate pressors to MAP >{60|65}. Follow lytes, replete prn. ",
    "Diuresis as BP tol. Advance diet. OOB to chair. ",
    "DNR/DNI. Comfort measures discussed with family. ",
    "Call out to floor when bed available. ",
];

/// How a generated note is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Everything in capitals.
    Upper,
    /// Ordinary case, section headers in capitals.
    MixedCapsHeaders,
    /// Ordinary case, section headers in title case.
    Mixed,
}

/// A note being built in one [`Style`].
struct Writer {
    note: Note,
    upper: bool,
}

impl Writer {
    fn t(&mut self, s: &str) {
        if self.upper {
            self.note.t(&s.to_uppercase());
        } else {
            self.note.t(s);
        }
    }
    fn phi(&mut self, c: Category, s: &str) {
        if self.upper {
            self.note.phi(c, &s.to_uppercase());
        } else {
            self.note.phi(c, s);
        }
    }
}

/// A 24-hour time, `0400`.
fn time(r: &mut Rng) -> String {
    format!("{:02}{:02}", r.range(0, 23), [0, 15, 30, 45][r.below(4)])
}

/// A date as nurses write it: `3/12`, `03/12`, `3/12/19`, `3-12`, `Jan 3`.
fn short_date(r: &mut Rng) -> String {
    let (m, d) = (r.range(1, 12), r.range(1, 28));
    match r.below(6) {
        0 | 1 => format!("{m}/{d}"),
        2 => format!("{m:02}/{d:02}"),
        3 => format!("{m}/{d}/{:02}", r.range(0, 30)),
        4 => format!("{m}-{d}"),
        _ => {
            let months = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec",
            ];
            format!("{} {d}", months[(m - 1) as usize])
        }
    }
}

/// Words of hospital names that are not a place or a person.
const HOSPITAL_NAMES: &[&str] = &[
    "Sacred Heart",
    "Holy Cross",
    "Good Samaritan",
    "Holy Family",
    "Mercy",
    "Providence",
    "Our Lady of Lourdes",
    "St. Joseph's",
    "St. Mary's",
    "St. Elizabeth's",
    "St. Luke's",
    "St. Vincent's",
    "St. Anne's",
    "Saint Francis",
    "Lutheran",
    "Baptist",
    "Presbyterian",
];

/// A hospital, nursing home or rehab named in full or alone: `Sacred Heart`, `St. Luke's
/// Hospital`, `Quincy Medical Center`, `Kowalski Memorial`, `Lowell General`.
fn hospital(g: &mut Gen) -> String {
    match g.r.below(7) {
        0 | 1 => {
            let n = HOSPITAL_NAMES[g.r.below(HOSPITAL_NAMES.len())];
            match g.r.below(3) {
                0 => n.to_owned(),
                1 => format!("{n} Hospital"),
                _ => format!("{n} Medical Center"),
            }
        }
        2 => {
            let c = g.city();
            let kind = ["General", "Hospital", "Medical Center", "Rehab", "VA"][g.r.below(5)];
            format!("{c} {kind}")
        }
        3 => {
            let l = g.last();
            let kind = ["Memorial", "Rehab Center", "Nursing Home", "Manor", "House"][g.r.below(5)];
            format!("{l} {kind}")
        }
        4 => {
            // A hospital's proper name alone: "transferred from Lawrence".
            g.last()
        }
        5 => {
            let f = g.first();
            format!("St. {f}'s")
        }
        _ => {
            let c = g.city();
            format!("{c} Hospital")
        }
    }
}

/// A hospital's abbreviation: `GH`, `VAMC`, `SHH`, `LMC`.
fn hospital_abbreviation(r: &mut Rng) -> String {
    match r.below(4) {
        0 => ["GH", "VAMC", "VA", "MGH", "CH", "UH"][r.below(6)].to_owned(),
        1 => {
            let n = r.range(1, 2) as usize;
            format!("{}H", r.letters(n))
        }
        2 => format!("{}MC", r.letters(1)),
        _ => format!("{}GH", r.letters(1)),
    }
}

/// A ward named after a building or a donor: `Farr 4`, `Kowalski 7`, `Stoneman ICU`.
fn ward(g: &mut Gen) -> String {
    let l = g.last();
    if g.r.chance(0.7) {
        format!("{l} {}", g.r.range(2, 12))
    } else {
        format!(
            "{l} {}",
            ["ICU", "CCU", "Unit", "West", "East"][g.r.below(5)]
        )
    }
}

/// A common first name in lower case (`bill`, `mary`): how informal notes write relatives.
fn lower_first(g: &mut Gen) -> String {
    let pool = &g.p.census_first;
    let n = pool.len().min(200);
    pool.get(g.r.below(n)).copied().unwrap_or("mary").to_owned()
}

/// Writes the identifier of slot `name` (`FIRST`, `DATE`, …) into `w`.
fn slot(g: &mut Gen, w: &mut Writer, name: &str) {
    use Category as C;
    match name {
        "FIRST" => {
            let f = g.first();
            w.phi(C::Person, &f);
        }
        "first" => {
            let f = lower_first(g);
            w.phi(C::Person, &f);
        }
        "LAST" | "DRLAST" => {
            let l = g.last();
            w.phi(C::Person, &l);
        }
        "INIT" => {
            let i = format!("{}.", g.r.letters(1));
            w.phi(C::Person, &i);
        }
        "DATE" => {
            let d = short_date(&mut g.r);
            w.phi(C::Date, &d);
        }
        "HOSP" => {
            let h = hospital(g);
            // Informal notes write a hospital's name in lower case too.
            let h = if !w.upper && g.r.chance(0.1) {
                h.to_lowercase()
            } else {
                h
            };
            w.phi(C::Location, &h);
        }
        "HABBR" => {
            let h = hospital_abbreviation(&mut g.r);
            w.phi(C::Location, &h);
        }
        "WARD" => {
            let h = ward(g);
            w.phi(C::Location, &h);
        }
        "CITY" => {
            let c = g.city();
            w.phi(C::City, &c);
        }
        "PHONE" => {
            let p = g.phone();
            w.phi(C::Phone, &p);
        }
        "AGE90" => {
            let a = g.r.range(90, 104).to_string();
            w.phi(C::Age, &a);
        }
        _ => w.t(name),
    }
}

/// A number drawn as `{a-b}` or `{a.b-c.d}` says, or `None` when `spec` is no range (a
/// choice, `{-2|-1|0}`, has bars).
fn number(r: &mut Rng, spec: &str) -> Option<String> {
    if spec.contains('|') {
        return None;
    }
    let (lo, hi) = spec.split_once('-')?;
    if lo.contains('.') {
        let tenths = |s: &str| -> Option<u32> {
            let (i, f) = s.split_once('.')?;
            Some(i.parse::<u32>().ok()? * 10 + f.get(..1)?.parse::<u32>().ok()?)
        };
        let v = r.range(tenths(lo)?, tenths(hi)?);
        return Some(format!("{}.{}", v / 10, v % 10));
    }
    let (a, b) = (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?);
    (a <= b).then(|| r.range(a, b).to_string())
}

/// Writes a phrase of [`SYSTEMS`], [`TELEGRAPHIC`], [`WITH_PHI`] or [`PLAN`] into `w`.
fn phrase(g: &mut Gen, w: &mut Writer, template: &str) {
    let mut rest = template;
    // A `<` starts a slot only before a letter (`<FIRST>`), not in `residuals <50cc`.
    let starts = |r: &str| {
        r.char_indices().find(|&(i, c)| {
            c == '{' || (c == '<' && r.as_bytes().get(i + 1).is_some_and(u8::is_ascii_alphabetic))
        })
    };
    while let Some((k, _)) = starts(rest) {
        w.t(rest.get(..k).unwrap_or(""));
        let open = rest.as_bytes().get(k).copied();
        let close = if open == Some(b'{') { '}' } else { '>' };
        let Some(end) = rest.get(k..).and_then(|r| r.find(close)).map(|e| e + k) else {
            rest = rest.get(k..).unwrap_or("");
            break;
        };
        let inner = rest.get(k + 1..end).unwrap_or("");
        if open == Some(b'<') {
            slot(g, w, inner);
        } else if inner == "time" {
            let t = time(&mut g.r);
            w.t(&t);
        } else if let Some(n) = number(&mut g.r, inner) {
            w.t(&n);
        } else {
            let choices: Vec<&str> = inner.split('|').collect();
            let c = choices.get(g.r.below(choices.len())).copied().unwrap_or("");
            w.t(c);
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    w.t(rest);
}

/// Generates `n` labelled nursing notes from `seed`.
pub fn generate_nursing_notes(seed: u64, n: usize) -> Vec<Doc> {
    let mut g = Gen {
        r: Rng(seed),
        p: Pools::new(),
    };
    (0..n).map(|_| nursing_note(&mut g)).collect()
}

fn nursing_note(g: &mut Gen) -> Doc {
    let style = match g.r.below(10) {
        0..=3 => Style::Upper,
        4..=6 => Style::MixedCapsHeaders,
        _ => Style::Mixed,
    };
    let mut w = Writer {
        note: Note {
            text: String::new(),
            gold: Vec::new(),
        },
        upper: style == Style::Upper,
    };
    let header = [
        "NPN {7a-7p|7p-7a|0700-1900|1900-0700}",
        "MICU NURSING PROGRESS NOTE",
        "CCU NPN",
        "Nursing Progress Note {7a-7p|7p-7a}",
        "SICU NSG NOTE",
        "Nursing admit note",
    ][g.r.below(6)];
    phrase(g, &mut w, header);
    w.t("\n");
    // An opening line, often with where the patient came from.
    let opening = OPENINGS[g.r.below(OPENINGS.len())];
    phrase(g, &mut w, opening);
    w.t("\n");
    let systems = g.r.range(5, SYSTEMS.len() as u32) as usize;
    for (k, (name, phrases)) in SYSTEMS.iter().enumerate() {
        if k >= systems && g.r.chance(0.5) {
            continue;
        }
        let head = match style {
            Style::Upper | Style::MixedCapsHeaders => name.to_uppercase(),
            Style::Mixed => title_case(name),
        };
        let head = if head == "Cv" || head == "Id" {
            head.to_uppercase()
        } else {
            head
        };
        w.t(&format!("{head}: "));
        for _ in 0..g.r.range(1, 3) {
            let p = phrases[g.r.below(phrases.len())];
            phrase(g, &mut w, p);
        }
        if g.r.chance(0.35) {
            let p = TELEGRAPHIC[g.r.below(TELEGRAPHIC.len())];
            phrase(g, &mut w, p);
        }
        if g.r.chance(0.3) {
            let p = WITH_PHI[g.r.below(WITH_PHI.len())];
            phrase(g, &mut w, p);
        }
        w.t("\n");
    }
    let social = if style == Style::Upper {
        "SOCIAL: "
    } else {
        ["Social: ", "SOCIAL: ", "Family: "][g.r.below(3)]
    };
    w.t(social);
    for _ in 0..g.r.range(1, 3) {
        let p = WITH_PHI[g.r.below(WITH_PHI.len())];
        phrase(g, &mut w, p);
    }
    w.t("\n");
    w.t(if style == Style::Mixed {
        "Plan: "
    } else {
        "PLAN: "
    });
    let p = PLAN[g.r.below(PLAN.len())];
    phrase(g, &mut w, p);
    let p = TELEGRAPHIC[g.r.below(TELEGRAPHIC.len())];
    phrase(g, &mut w, p);
    w.t("\n");
    let Note { text, gold } = w.note;
    Doc { text, gold }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::GoldLabel;

    #[test]
    fn same_seed_same_notes_and_spans_are_in_bounds() {
        let a = generate_nursing_notes(3, 30);
        assert_eq!(a, generate_nursing_notes(3, 30));
        assert_ne!(a, generate_nursing_notes(4, 30));
        for d in &a {
            for g in &d.gold {
                assert!(d.text.is_char_boundary(g.start) && d.text.is_char_boundary(g.end));
                assert!(g.start < g.end && g.end <= d.text.len());
            }
            // Every template was filled.
            assert!(!d.text.contains(['{', '}']), "{}", d.text);
        }
    }

    #[test]
    fn the_issue_classes_all_occur() {
        let docs = generate_nursing_notes(42, 300);
        let mut seen = crate::CategorySet::empty();
        let mut upper = 0;
        for d in &docs {
            for g in &d.gold {
                if let GoldLabel::Phi(c) = g.label {
                    seen = seen.with(c);
                }
            }
            if !d.text.bytes().any(|b| b.is_ascii_lowercase()) {
                upper += 1;
            }
        }
        for c in [
            Category::Person,
            Category::Date,
            Category::Location,
            Category::City,
            Category::Phone,
            Category::Age,
        ] {
            assert!(seen.contains(c), "{c} never generated");
        }
        assert!(upper > 60 && upper < 200, "{upper} notes in capitals");
        let all: String = docs.iter().map(|d| d.text.as_str()).collect();
        for shape in ["transferred from", "PSV", "/5", "Dr. ", "x14"] {
            assert!(
                all.to_lowercase().contains(&shape.to_lowercase()),
                "{shape}"
            );
        }
    }
}
