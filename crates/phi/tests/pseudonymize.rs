//! Pseudonymisation through the public API: consistent tokens, round trips, and the streaming
//! re-identifier with tokens split at every possible boundary.

#![expect(clippy::unwrap_used, reason = "tests")]

use wardgate_phi::{Category, Detector, Pseudonymizer};

fn pseudonymizer() -> Pseudonymizer {
    Pseudonymizer::with_key(Detector::shared(), [42; 32])
}

#[test]
fn round_trip_of_a_clinical_note() {
    let note = "Patient: Maria Gonzalez\nDOB: 04/12/1930  MRN: 00482913\n\
                Maria Gonzalez, a 93-year-old woman, lives at 48 Oak Street, Springfield, \
                IL 62704. Call her daughter Ana Gonzalez at (617) 555-0143 or \
                ana.g@example.com. SSN 123-45-6789.";
    let mut p = pseudonymizer();
    let pseudo = p.pseudonymize(note);
    for secret in [
        "Maria",
        "Gonzalez",
        "04/12/1930",
        "00482913",
        "48 Oak Street",
        "62704",
        "555-0143",
        "ana.g@example.com",
        "123-45-6789",
    ] {
        assert!(!pseudo.contains(secret), "{secret} leaked: {pseudo}");
    }
    // The same person gets the same token both times.
    assert_eq!(pseudo.matches("[PERSON_1]").count(), 2, "{pseudo}");
    assert!(pseudo.contains("[PERSON_2]"), "{pseudo}");
    assert_eq!(p.reidentify(&pseudo), note);
}

/// Issue 19's target: a `deidentify` round trip of a realistic nursing note leaves every
/// clinical term as it was and takes out the identifiers.
#[test]
fn a_nursing_note_keeps_its_clinical_terms_through_deidentify() {
    let note = "MICU NPN 7p-7a\n\
        Pt transferred from OSH on 3/12 for mgmt of resp failure, seen at Sacred Heart.\n\
        NEURO: Sedated on Propofol 30mcg/kg/min, RASS -2. PERRL. MAE.\n\
        CV: HR 90s ST, no ectopy. Levo 0.08 titrated to MAP >65. K 3.4, repleted.\n\
        RESP: Intubated on AC 500x14, PEEP 5, FiO2 40%. Changed to PSV 10/5, tol well.\n\
        GI: Abd soft, +BS. TF Promote @ 40cc/hr via OGT. Given colace.\n\
        GU: Foley draining clear yellow urine 50cc/hr. Lasix 40mg IV given.\n\
        ID: Tmax 101.2. On Vanco and Zosyn. BCx x2 sent.\n\
        SOCIAL: Wife Mary in to visit, updated by Dr. Kowalczyk. Will cont to monitor.\n\
        PLAN: Wean vent as tol. Keep K >4. Still on Levo. See flowsheet.\n";
    let mut p = pseudonymizer();
    let pseudo = p.pseudonymize(note);
    for term in [
        "MICU",
        "NPN",
        "OSH",
        "NEURO",
        "Propofol",
        "RASS",
        "PERRL",
        "MAE",
        "CV",
        "Levo",
        "RESP",
        "Intubated",
        "PSV",
        "AC 500x14",
        "PEEP",
        "TF Promote",
        "OGT",
        "Given",
        "Foley",
        "Lasix",
        "ID:",
        "Vanco",
        "Zosyn",
        "BCx",
        "SOCIAL",
        "Will cont",
        "PLAN",
        "Keep K",
        "Still on",
        "See flowsheet",
        "resp failure",
    ] {
        assert!(pseudo.contains(term), "{term} was taken out: {pseudo}");
    }
    for secret in ["3/12", "Mary", "Kowalczyk", "Sacred Heart"] {
        assert!(!pseudo.contains(secret), "{secret} leaked: {pseudo}");
    }
    assert_eq!(p.reidentify(&pseudo), note);
}

#[test]
fn a_model_answer_is_restored_and_invented_tokens_are_kept() {
    let mut p = pseudonymizer();
    let _ = p.pseudonymize("Email jane.doe@example.com about MRN 00482913.");
    let answer = "I wrote to [EMAIL_1] about [MRN_1]; [PERSON_7] was not mentioned.";
    assert_eq!(
        p.reidentify(answer),
        "I wrote to jane.doe@example.com about 00482913; [PERSON_7] was not mentioned."
    );
}

#[test]
fn streaming_restores_tokens_split_at_every_byte_boundary() {
    let mut p = pseudonymizer();
    let a = p.token_for(Category::Person, "Zoë Müller");
    let b = p.token_for(Category::Phone, "617-555-0143");
    let c = p.token_for(Category::Person, "Ann Lee");
    let stream = format!("Dear {a}, call {b} [x] or [PERSON_99] then {c}. [PERSON_");
    let want = p.reidentify(&stream);
    assert!(want.contains("Zoë Müller") && want.contains("Ann Lee"));
    let boundaries: Vec<usize> = (0..=stream.len())
        .filter(|&i| stream.is_char_boundary(i))
        .collect();
    // Every single split point.
    for &cut in &boundaries {
        let mut r = p.reidentifier();
        let mut got = r.push(&stream[..cut]);
        got.push_str(&r.push(&stream[cut..]));
        got.push_str(&r.finish());
        assert_eq!(got, want, "split at {cut}");
    }
    // Every chunk size, including one character at a time.
    for size in 1..=12 {
        let mut r = p.reidentifier();
        let mut got = String::new();
        let mut at = 0;
        while at < stream.len() {
            let mut end = (at + size).min(stream.len());
            while !stream.is_char_boundary(end) {
                end += 1;
            }
            got.push_str(&r.push(&stream[at..end]));
            at = end;
        }
        got.push_str(&r.finish());
        assert_eq!(got, want, "chunk size {size}");
    }
}

#[test]
fn streaming_holds_back_only_what_could_still_be_a_token() {
    let mut p = pseudonymizer();
    let _ = p.token_for(Category::Person, "Ann Lee");
    let mut r = p.reidentifier();
    assert_eq!(r.push("see [PER"), "see ");
    assert_eq!(r.push("SON_1] and [x"), "Ann Lee and [x");
    assert_eq!(r.push("y] ["), "y] ");
    assert_eq!(r.push("Q"), "[Q");
    assert_eq!(r.finish(), "");
}

#[test]
fn distinct_pseudonymizers_do_not_share_mappings() {
    let mut a = pseudonymizer();
    let b = pseudonymizer();
    let t = a.token_for(Category::Person, "Ann Lee");
    assert_eq!(b.reidentify(&t), t);
    assert!(b.is_empty() && a.len() == 1);
    let _ = Pseudonymizer::default();
    let shown = format!("{a:?}");
    assert!(!shown.contains("Ann"), "{shown}");
    let _ = serde_json::to_string(&Category::Person).unwrap();
}
