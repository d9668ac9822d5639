//! Behaviour of the public detector, category by category: what must be found (and as what),
//! and look-alikes that must not be (checksum failures, impossible numbers, years alone,
//! ages under 90, ordinary capitalised words). Also redaction, and byte offsets on
//! multi-byte text.

#![expect(clippy::unwrap_used, reason = "tests")]

use wardgate_phi::{Category, Detector, Pseudonymizer, Span, detect, redact};

/// The (category, text) of each span found in `text`.
fn found(text: &str) -> Vec<(Category, String)> {
    detect(text)
        .iter()
        .map(|s| (s.category, s.text(text).to_owned()))
        .collect()
}

/// Asserts that `text` yields a span of `cat` covering exactly `want`.
fn assert_finds(text: &str, cat: Category, want: &str) {
    let got = found(text);
    assert!(
        got.iter().any(|(c, t)| *c == cat && t == want),
        "expected {cat} `{want}` in {text:?}, got {got:?}"
    );
}

/// Asserts that no span in `text` overlaps `part`.
fn assert_ignores(text: &str, part: &str) {
    let at = text.find(part).unwrap();
    let (s, e) = (at, at + part.len());
    let hits: Vec<Span> = detect(text)
        .into_iter()
        .filter(|sp| sp.start < e && s < sp.end)
        .collect();
    assert!(
        hits.is_empty(),
        "`{part}` in {text:?} should not be flagged, got {:?}",
        hits.iter()
            .map(|h| (h.category, h.text(text)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn finds_each_category() {
    use Category as C;
    let cases: &[(&str, Category, &str)] = &[
        (
            "Seen by Dr. Margaret Okonkwo today.",
            C::Person,
            "Margaret Okonkwo",
        ),
        (
            "Pt John Smith presents with cough.",
            C::Person,
            "John Smith",
        ),
        (
            "Her husband Kristóf Szöllősy visited.",
            C::Person,
            "Kristóf Szöllősy",
        ),
        (
            "Lives at 1234 N Maple Ave, Springfield, IL 62704.",
            C::StreetAddress,
            "1234 N Maple Ave",
        ),
        (
            "Lives at 1234 N Maple Ave, Springfield, IL 62704.",
            C::City,
            "Springfield",
        ),
        (
            "Lives at 1234 N Maple Ave, Springfield, IL 62704.",
            C::ZipCode,
            "62704",
        ),
        (
            "Mail to P.O. Box 4471, please.",
            C::StreetAddress,
            "P.O. Box 4471",
        ),
        (
            "Address: Koskikatu 25, Helsinki",
            C::StreetAddress,
            "Koskikatu 25",
        ),
        ("DOB: 03/14/1931", C::Date, "03/14/1931"),
        ("Admitted 2021-07-22 for pneumonia.", C::Date, "2021-07-22"),
        ("Follow up on 7/22 in clinic.", C::Date, "7/22"),
        ("Surgery on March 3rd went well.", C::Date, "March 3rd"),
        ("Seen 3 Mar 2021 for review.", C::Date, "3 Mar 2021"),
        ("Symptoms began in March 2021.", C::Date, "March 2021"),
        ("A 94-year-old woman with CHF.", C::Age, "94"),
        ("Pt is a 101 yo male.", C::Age, "101"),
        ("Call 617-555-0143 after 5pm.", C::Phone, "617-555-0143"),
        ("Cell: (617) 555-0143", C::Phone, "(617) 555-0143"),
        ("Fax: (617) 555-0199", C::Fax, "(617) 555-0199"),
        (
            "Phone (617) 555-0143, fax (617) 555-0199.",
            C::Phone,
            "(617) 555-0143",
        ),
        (
            "Phone (617) 555-0143, fax (617) 555-0199.",
            C::Fax,
            "(617) 555-0199",
        ),
        (
            "Send records to 617.555.0199 (fax).",
            C::Fax,
            "617.555.0199",
        ),
        (
            "Email jane.doe@example.com with results.",
            C::Email,
            "jane.doe@example.com",
        ),
        ("SSN 123-45-6789 on file.", C::Ssn, "123-45-6789"),
        ("MRN: 00482913", C::Mrn, "00482913"),
        ("Medical record number A-2291043.", C::Mrn, "A-2291043"),
        ("Member ID: XGH123456789", C::HealthPlan, "XGH123456789"),
        (
            "Medicare 1EG4-TE5-MK73 active.",
            C::HealthPlan,
            "1EG4-TE5-MK73",
        ),
        ("Billing acct # 0012345678.", C::Account, "0012345678"),
        (
            "Card 4111 1111 1111 1111 declined.",
            C::CreditCard,
            "4111 1111 1111 1111",
        ),
        (
            "Refund to GB82WEST12345698765432 today.",
            C::Iban,
            "GB82WEST12345698765432",
        ),
        (
            "Driver's license D1234567 verified.",
            C::License,
            "D1234567",
        ),
        ("Prescriber DEA AB1234563.", C::License, "AB1234563"),
        ("Attending NPI 1234567893.", C::License, "1234567893"),
        (
            "Vehicle 1HGCM82633A004352 towed.",
            C::Vehicle,
            "1HGCM82633A004352",
        ),
        ("License plate 7ABC123 noted.", C::Vehicle, "7ABC123"),
        (
            "Pacemaker serial number PJN123456S.",
            C::Device,
            "PJN123456S",
        ),
        ("Pump S/N 8827-XK19 replaced.", C::Device, "8827-XK19"),
        ("Phone IMEI 490154203237518.", C::Device, "490154203237518"),
        (
            "See https://portal.example.org/p/123 now.",
            C::Url,
            "https://portal.example.org/p/123",
        ),
        (
            "Blog at www.jsmithphoto.com daily.",
            C::Url,
            "www.jsmithphoto.com",
        ),
        (
            "Login from 192.168.14.201 flagged.",
            C::IpAddress,
            "192.168.14.201",
        ),
        (
            "Login from 2001:db8:85a3::8a2e:370:7334 flagged.",
            C::IpAddress,
            "2001:db8:85a3::8a2e:370:7334",
        ),
        (
            "Fingerprint ID FP-4471-2290 on file.",
            C::Biometric,
            "FP-4471-2290",
        ),
        (
            "Claim number CLM-2019-88812 denied.",
            C::Id,
            "CLM-2019-88812",
        ),
    ];
    for &(text, cat, want) in cases {
        assert_finds(text, cat, want);
    }
}

#[test]
fn ignores_checksum_failures_and_impossible_numbers() {
    let cases: &[(&str, &str)] = &[
        ("Card 4111 1111 1111 1112 declined.", "4111 1111 1111 1112"),
        ("Number 4111111111111112 again.", "4111111111111112"),
        ("Vehicle 1HGCM82634A004352 towed.", "1HGCM82634A004352"),
        ("SSN 000-12-3456 is invalid.", "000-12-3456"),
        ("SSN 666-12-3456 is invalid.", "666-12-3456"),
        ("SSN 912-12-3456 is invalid.", "912-12-3456"),
        ("SSN 123-00-4567 is invalid.", "123-00-4567"),
        (
            "Refund to GB82WEST12345698765433 today.",
            "GB82WEST12345698765433",
        ),
        ("Host 999.1.1.1 unreachable.", "999.1.1.1"),
        ("Version 1.2.3.4.5 released.", "1.2.3.4.5"),
        ("DEA AB1234564 looks wrong.", "AB1234564"),
    ];
    for &(text, part) in cases {
        assert_ignores(text, part);
    }
}

#[test]
fn ignores_non_phi_look_alikes() {
    let cases: &[(&str, &str)] = &[
        ("Diagnosed with diabetes in 2019.", "2019"),
        ("A 45-year-old man with chest pain.", "45"),
        ("Her mother died at 68.", "68"),
        ("BP 128/76, HR 72, SpO2 97%.", "128/76"),
        ("Take 1/2 tablet daily.", "1/2"),
        ("Pain 6/10 at rest.", "6/10"),
        ("Strength 5/5 bilaterally.", "5/5"),
        ("Continue metformin 500 mg twice daily.", "500"),
        ("Patient denies fever. Plan follows.", "Patient"),
        ("Brown stool noted. Will recheck.", "Brown"),
        ("May I ask a question?", "May"),
        ("History of Parkinson's disease.", "Parkinson"),
        ("History of Wilson's disease.", "Wilson"),
        ("Her Baker's cyst is smaller.", "Baker"),
        ("Glasgow Coma Scale 15 on arrival.", "Glasgow"),
        (
            "He was seen in the Emergency Department.",
            "Emergency Department",
        ),
        ("Vitals stable. Labs pending.", "Vitals"),
        ("Seen on Monday at 14:30.", "Monday"),
        ("The weather in France is mild.", "France"),
        ("CT and MRI were negative.", "MRI"),
    ];
    for &(text, part) in cases {
        assert_ignores(text, part);
    }
}

/// Issue 19's attacker cases: characters that hide a number from ASCII patterns, names after
/// a capitalised verb, in lower case after a role, and surname first. Each is found with
/// offsets into the text as written, and `deidentify` (the pseudonymiser) replaces exactly
/// those bytes and restores them.
#[test]
fn hidden_characters_and_reordered_names_are_found_where_written() {
    use Category as C;
    let cases: &[(&str, Category, &str)] = &[
        (
            "SSN ４５７-５５-５４６２ on file.",
            C::Ssn,
            "４５７-５５-５４６２",
        ),
        (
            "SSN 457\u{2010}55\u{2010}5462 on file.",
            C::Ssn,
            "457\u{2010}55\u{2010}5462",
        ),
        (
            "457\u{2011}55\u{2011}5462",
            C::Ssn,
            "457\u{2011}55\u{2011}5462",
        ),
        (
            "ssn: 457\u{2013}55\u{2013}5462",
            C::Ssn,
            "457\u{2013}55\u{2013}5462",
        ),
        (
            "457\u{2014}55\u{2015}5462 was given",
            C::Ssn,
            "457\u{2014}55\u{2015}5462",
        ),
        (
            "Number 457\u{2212}55\u{2212}5462.",
            C::Ssn,
            "457\u{2212}55\u{2212}5462",
        ),
        (
            "SSN 45\u{ad}7-55-54\u{ad}62",
            C::Ssn,
            "45\u{ad}7-55-54\u{ad}62",
        ),
        (
            "SSN 457\u{200b}-55-\u{200d}5462.",
            C::Ssn,
            "457\u{200b}-55-\u{200d}5462",
        ),
        ("SSN ٤٥٧-٥٥-٥٤٦٢", C::Ssn, "٤٥٧-٥٥-٥٤٦٢"),
        ("SSN 4 5 7 5 5 5 4 6 2.", C::Ssn, "4 5 7 5 5 5 4 6 2"),
        ("4 5 7 - 5 5 - 5 4 6 2", C::Ssn, "4 5 7 - 5 5 - 5 4 6 2"),
        ("It is 457 - 55 - 5462.", C::Ssn, "457 - 55 - 5462"),
        (
            "call 6 1 7 5 5 5 0 1 4 3 today",
            C::Phone,
            "6 1 7 5 5 5 0 1 4 3",
        ),
        (
            "Phone ６１７-５５５-０１４３",
            C::Phone,
            "６１７-５５５-０１４３",
        ),
        ("Call John Smith at home.", C::Person, "John Smith"),
        ("patient john smith", C::Person, "john smith"),
        (
            "Seen today, patient john smith in bed 4.",
            C::Person,
            "john smith",
        ),
        ("Smith, John", C::Person, "Smith, John"),
        (
            "Jo\u{200b}hn Smith was seen.",
            C::Person,
            "Jo\u{200b}hn Smith",
        ),
        (
            "Ｊｏｈｎ Ｓｍｉｔｈ called.",
            C::Person,
            "Ｊｏｈｎ Ｓｍｉｔｈ",
        ),
    ];
    for &(text, cat, want) in cases {
        assert_finds(text, cat, want);
        let mut p = Pseudonymizer::with_key(Detector::shared(), [7; 32]);
        let pseudo = p.pseudonymize(text);
        let token = format!("[{}_1]", cat.name());
        assert_eq!(
            pseudo,
            text.replacen(want, &token, 1),
            "deidentify of {text:?}"
        );
        assert_eq!(p.reidentify(&pseudo), text);
    }
}

#[test]
fn normalisation_and_name_order_rules_keep_their_precision() {
    let cases: &[(&str, &str)] = &[
        // Dashes between words and in ranges stay punctuation.
        (
            "Seen 2019\u{2013}2021 for pages 10\u{2013}12.",
            "2019\u{2013}2021",
        ),
        ("Pain 3\u{2013}5 days.", "3\u{2013}5"),
        ("Tylenol \u{2014} Motrin alternating", "Tylenol"),
        // A capitalised verb or a role before a word that is no name.
        ("pt will go home today.", "will go"),
        ("Call back in 2 days.", "Call"),
        // Surname-comma pairs that are places or list items.
        ("Paris, Texas is far.", "Texas"),
        ("Chase, Virginia is a town.", "Virginia"),
        // Scores of single digits are no SSN.
        ("GCS 4 5 6 then 3 2 1.", "4 5 6"),
    ];
    for &(text, part) in cases {
        assert_ignores(text, part);
    }
}

/// Issue 19: the vocabulary of nursing notes (ward shorthand, headers in capitals or title
/// case, drugs, devices, procedures, telegraphic openers) is no name, in any case, while a
/// surname that is also such a word is still a name where a title or a relative says so.
#[test]
fn clinical_vocabulary_is_not_a_name_but_names_in_context_still_are() {
    let clinical: &[(&str, &str)] = &[
        ("Pt Tol TF well.", "Tol"),
        ("Pt Given ativan 1mg IV for agitation.", "Given"),
        ("Pt Will need bed on floor.", "Will"),
        ("NEURO: A&Ox3, MAE.", "NEURO"),
        ("Neuro: Pt alert, follows commands.", "Neuro"),
        ("CV: HR 80s NSR. RESP: LS clear.", "RESP"),
        ("PULM: on 2L NC. ENDO: FS 140s. HEME: Hct 28.", "ENDO"),
        ("Propofol weaned off at 0400.", "Propofol"),
        ("Sedated on Propofol, Dopamine titrated.", "Dopamine"),
        ("Started Captopril 12.5mg TID.", "Captopril"),
        ("Remains on Levo, Nitro gtt off.", "Levo"),
        ("Foley draining clear yellow urine.", "Foley"),
        ("Aline intact. Trach care done.", "Aline"),
        ("Vent settings unchanged, PERL.", "PERL"),
        ("PT INTUBATED, SEDATED. PROPOFOL GTT.", "INTUBATED"),
        ("GIVEN LASIX 40MG IV. FOLEY DRAINING.", "FOLEY"),
        (
            "Tolerating TF. Good UO. Still on levo. Keep K >4. See flowsheet.",
            "Still",
        ),
        ("TELE SR 60S, NO ECTOPY. BASELINE BEDBOUND.", "BEDBOUND"),
    ];
    for &(text, part) in clinical {
        assert_ignores(text, part);
    }
    use Category as C;
    let names: &[(&str, Category, &str)] = &[
        ("Dr. Will aware of BP.", C::Person, "Will"),
        ("Mr. Given seen by chaplain.", C::Person, "Given"),
        ("Wife Will in to visit.", C::Person, "Will"),
        ("Seen by Dr. Foley today.", C::Person, "Foley"),
        ("NEURO: wife Mary at bedside.", C::Person, "Mary"),
    ];
    for &(text, cat, want) in names {
        assert_finds(text, cat, want);
    }
}

/// Issue 19's hard classes in nursing notes: hospitals and nursing homes named in full,
/// alone after a transfer, by a religious name or abbreviated; relatives' first names alone
/// and in lower case; initials after a clinician's title or credential.
#[test]
fn places_first_names_and_initials_of_nursing_notes_are_found() {
    use Category as C;
    let cases: &[(&str, Category, &str)] = &[
        (
            "Pt transferred from Sacred Heart on 3/12.",
            C::Location,
            "Sacred Heart",
        ),
        ("Pt transferred from GH with PNA.", C::Location, "GH"),
        ("Seen at VAMC ED 2 days ago.", C::Location, "VAMC"),
        ("PT ADMITTED TO MICU FROM BMC ON 1/6.", C::Location, "BMC"),
        (
            "Plan to transfer to St. Luke's for rehab.",
            C::Location,
            "St. Luke's",
        ),
        (
            "Case mgmt to call Lowell General Hospital re: screening.",
            C::Location,
            "Lowell General Hospital",
        ),
        (
            "84 YO F TRANSFERRED FROM GLENCOE HOSPITAL WITH PNA.",
            C::Location,
            "GLENCOE HOSPITAL",
        ),
        (
            "Pt returned from Kim Memorial at 0430, VSS.",
            C::Location,
            "Kim Memorial",
        ),
        (
            "76 yo M transferred from Hardy with PNA.",
            C::Location,
            "Hardy",
        ),
        (
            "Pt returned from st. guneet's at 1815.",
            C::Location,
            "st. guneet's",
        ),
        (
            "Pt from Our Lady of Lourdes, baseline bedbound.",
            C::Location,
            "Our Lady of Lourdes",
        ),
        ("Dr. B. aware of K 3.2.", C::Person, "B."),
        ("Report given to RN A. at 0700.", C::Person, "A."),
        ("REPORT GIVEN TO RN G. /HEME: HCT 27.", C::Person, "G."),
        (
            "Wife Mary called. Son bill to visit in am.",
            C::Person,
            "bill",
        ),
        (
            "Sister diana and niece ruby called for update.",
            C::Person,
            "ruby",
        ),
        ("SOCIAL: NP IRA NOTIFIED OF SBP 80S.", C::Person, "IRA"),
        (
            "SON MARK IS HCP, CAN BE REACHED AT HOME.",
            C::Person,
            "MARK",
        ),
        (
            "Husband Alister in to visit, updated.",
            C::Person,
            "Alister",
        ),
        (
            "LIVES WITH HUSBAND AIDEN IN BENJAMINPORT.",
            C::Person,
            "AIDEN",
        ),
    ];
    for &(text, cat, want) in cases {
        assert_finds(text, cat, want);
    }
}

/// Issue 19: the numbers of ICU notes (vent settings, vitals, lab ratios, times) are no
/// dates, addresses or postal codes, and clinical shorthand after a place word is no place.
#[test]
fn numeric_shorthand_and_shorthand_places_are_not_phi() {
    let cases: &[(&str, &str)] = &[
        ("Vent changed to PSV 10/5, tol well.", "10/5"),
        ("CPAP 10/5 with FiO2 40%.", "10/5"),
        ("BIPAP 12/6 OVERNIGHT.", "12/6"),
        ("GU: BUN/Cr 10/3.7. UO 36cc/hr.", "10/3"),
        ("VS: T 100.1 HR 108 BP 98/68 RR 21.", "108 BP 98"),
        ("RESP: EXTUBATED AT 0045 TO 40% FACE TENT.", "0045 TO 40"),
        ("CAME UP FROM EW AT 0945. TO FLOOR.", "EW AT 0945"),
        ("Pt transferred from OSH for further mgmt.", "OSH"),
        ("Transferred to ICU, then to Stepdown.", "ICU"),
        ("The Attorney General spoke.", "General"),
        ("Pt transferred from NH, baseline OOB to chair.", "NH"),
    ];
    for &(text, part) in cases {
        assert_ignores(text, part);
    }
}

/// Notes written in capitals: a known city after "IN", and a facility's name after a verb
/// that is no part of it.
#[test]
fn cities_and_facilities_in_capitals_are_found_without_the_verb_before() {
    use Category as C;
    let cases: &[(&str, Category, &str)] = &[
        (
            "LIVES WITH HUSBAND RUDY IN GREENVILLE. /ID: TMAX 100.",
            C::City,
            "GREENVILLE",
        ),
        (
            "LIVES WITH DAUGHTER RENA IN MYRTLE BEACH.",
            C::City,
            "MYRTLE BEACH",
        ),
        (
            "CASE MGMT TO CALL HATBORO HOSPITAL RE: SCREENING.",
            C::Location,
            "HATBORO HOSPITAL",
        ),
        (
            "Case mgmt to call Good Samaritan Hospital re: bed.",
            C::Location,
            "Good Samaritan Hospital",
        ),
    ];
    for &(text, cat, want) in cases {
        assert_finds(text, cat, want);
    }
    assert_ignores("PT IN NAD. WILL CALL MD.", "NAD");
}

#[test]
fn spans_are_sorted_non_overlapping_and_on_char_boundaries() {
    let text = "Zoë Müller (DOB 03/14/1931) lives at 12 Oak St — tél. 617-555-0143, e-mail zoë@example.com";
    let spans = detect(text);
    assert!(!spans.is_empty());
    for w in spans.windows(2) {
        assert!(w[0].end <= w[1].start, "{w:?}");
    }
    for s in &spans {
        assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        assert!(s.score > 0.0 && s.score <= 1.0);
    }
    assert_finds(text, Category::Person, "Zoë Müller");
    assert_finds(text, Category::Phone, "617-555-0143");
}

#[test]
fn redaction_replaces_each_span_with_its_category() {
    let text = "Pt John Smith, DOB 03/14/1931, MRN 00482913, called from 617-555-0143.";
    assert_eq!(
        redact(text),
        "Pt [PERSON], DOB [DATE], MRN [MRN], called from [PHONE]."
    );
    let only_phone = Detector::new().with_categories([Category::Phone]);
    assert_eq!(
        only_phone.redact(text),
        "Pt John Smith, DOB 03/14/1931, MRN 00482913, called from [PHONE]."
    );
}

/// A small deterministic generator for the fuzz-ish loops (no external crates).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn arbitrary_strings_never_panic_and_offsets_stay_valid() {
    let alphabet: Vec<char> =
        "aZ09 .,:;-/()#@+\n\t'’éßЖ中😀\u{301}xX[]_%=*>?!\u{ad}\u{200b}４‐–…ﬁ٤\u{feff}"
            .chars()
            .collect();
    let pieces = [
        "123-45-6789",
        "Dr. ",
        "MRN ",
        "@",
        "http://",
        "::",
        "192.168.",
        "4111 ",
        "Apt ",
        "7/22",
        "March ",
        "St ",
        "Fax: ",
        "+41 (0)",
        "GB82",
        "(01)",
        "S/N ",
    ];
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let mut s = String::new();
        let len = rng.next() % 60;
        for _ in 0..len {
            if rng.next().is_multiple_of(4) {
                s.push_str(pieces[(rng.next() as usize) % pieces.len()]);
            } else {
                s.push(alphabet[(rng.next() as usize) % alphabet.len()]);
            }
        }
        let spans = detect(&s);
        let mut last = 0;
        for sp in &spans {
            assert!(
                sp.start >= last && sp.start < sp.end && sp.end <= s.len(),
                "{s:?}"
            );
            assert!(
                s.is_char_boundary(sp.start) && s.is_char_boundary(sp.end),
                "{s:?}"
            );
            last = sp.end;
        }
        let _ = redact(&s);
    }
}

#[test]
fn empty_and_whitespace_inputs() {
    assert!(detect("").is_empty());
    assert!(detect(" \n\t ").is_empty());
    assert_eq!(redact(""), "");
}
