//! Loads Presidio-research's `synth_dataset_v2.json` and maps its 17 entity types onto
//! Safe Harbor categories.
//!
//! The rule, also printed by `phi-bench`:
//! - PERSON, STREET_ADDRESS, ZIP_CODE, PHONE_NUMBER, EMAIL_ADDRESS, US_SSN, IP_ADDRESS,
//!   CREDIT_CARD, IBAN_CODE, US_DRIVER_LICENSE map to the matching category; DOMAIN_NAME (all
//!   of them full web addresses) to URL.
//! - DATE_TIME is a DATE unless it is a year alone or has no digit (a weekday): Safe Harbor
//!   keeps years.
//! - AGE is an AGE only over 89; younger ages are neutral.
//! - GPE is a CITY when it touches a gold address or ZIP span (at most 8 characters of
//!   spaces and punctuation between) and is not a country or a US state, nor 3 characters or
//!   fewer (region codes such as `SK`, and the generator's `nan`); otherwise neutral, since
//!   countries and states are not PHI and a bare place name is ambiguous.
//! - ORGANIZATION, TITLE and NRP are not Safe Harbor identifiers: neutral.

use serde::Deserialize;

use super::{Doc, Gold, GoldLabel, char_to_byte};
use crate::Category;
use crate::dict::{self, COUNTRY, STATE};

#[derive(Deserialize)]
struct RawDoc {
    full_text: String,
    spans: Vec<RawSpan>,
}

#[derive(Deserialize)]
struct RawSpan {
    entity_type: String,
    start_position: usize,
    end_position: usize,
}

/// The category of a source label when it is PHI by type alone; `None` for the labels that
/// need the value or the neighbourhood to decide, and for non-PHI labels.
pub fn map_presidio_label(entity_type: &str) -> Option<Category> {
    Some(match entity_type {
        "PERSON" => Category::Person,
        "STREET_ADDRESS" => Category::StreetAddress,
        "ZIP_CODE" => Category::ZipCode,
        "PHONE_NUMBER" => Category::Phone,
        "EMAIL_ADDRESS" => Category::Email,
        "US_SSN" => Category::Ssn,
        "IP_ADDRESS" => Category::IpAddress,
        "CREDIT_CARD" => Category::CreditCard,
        "IBAN_CODE" => Category::Iban,
        "US_DRIVER_LICENSE" => Category::License,
        "DOMAIN_NAME" => Category::Url,
        _ => return None,
    })
}

fn date_label(value: &str) -> GoldLabel {
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    let year_only = value.trim().len() == 4 && digits == 4;
    if digits == 0 || year_only {
        GoldLabel::Neutral("DATE_TIME".into())
    } else {
        GoldLabel::Phi(Category::Date)
    }
}

fn age_label(value: &str) -> GoldLabel {
    match value.trim().parse::<u32>() {
        Ok(a) if a > 89 => GoldLabel::Phi(Category::Age),
        _ => GoldLabel::Neutral("AGE".into()),
    }
}

/// Parses the dataset JSON into documents with byte offsets and Safe Harbor labels.
pub fn load_presidio_research(json: &str) -> Result<Vec<Doc>, serde_json::Error> {
    let raw: Vec<RawDoc> = serde_json::from_str(json)?;
    let d = dict::dict();
    let mut docs = Vec::with_capacity(raw.len());
    for r in raw {
        let text = r.full_text;
        let mut gold: Vec<(Gold, String)> = r
            .spans
            .iter()
            .map(|s| {
                let start = char_to_byte(&text, s.start_position);
                let end = char_to_byte(&text, s.end_position);
                let value = text.get(start..end).unwrap_or("");
                let label = match s.entity_type.as_str() {
                    "DATE_TIME" => date_label(value),
                    "AGE" => age_label(value),
                    t => match map_presidio_label(t) {
                        Some(c) => GoldLabel::Phi(c),
                        None => GoldLabel::Neutral(t.to_owned()),
                    },
                };
                (Gold { start, end, label }, s.entity_type.clone())
            })
            .collect();
        // GPE next to an address is the city of that address.
        let anchors: Vec<(usize, usize)> = gold
            .iter()
            .filter(|(g, _)| {
                matches!(
                    g.label,
                    GoldLabel::Phi(Category::StreetAddress | Category::ZipCode)
                )
            })
            .map(|(g, _)| (g.start, g.end))
            .collect();
        for (g, t) in &mut gold {
            if t != "GPE" {
                continue;
            }
            let value = text.get(g.start..g.end).unwrap_or("");
            let lower = value.to_lowercase();
            let info = d.get(lower.trim());
            if value.chars().count() <= 3 || info.has(COUNTRY | STATE) {
                continue;
            }
            let touches = anchors.iter().any(|&(s, e)| {
                let between = if e <= g.start {
                    text.get(e..g.start)
                } else if g.end <= s {
                    text.get(g.end..s)
                } else {
                    Some("")
                };
                between.is_some_and(|b| {
                    b.len() <= 8
                        && b.chars()
                            .all(|c| c.is_whitespace() || c.is_ascii_punctuation())
                })
            });
            if touches {
                g.label = GoldLabel::Phi(Category::City);
            }
        }
        docs.push(Doc {
            text,
            gold: gold.into_iter().map(|(g, _)| g).collect(),
        });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn maps_labels_by_the_stated_rule() {
        let json = r#"[{"full_text": "Zoë lives at 12 Oak St, Springfield 12345. In 1990 on Monday, aged 45 and 93, 1/2/2000, France",
          "spans": [
            {"entity_type": "PERSON", "entity_value": "Zoë", "start_position": 0, "end_position": 3},
            {"entity_type": "STREET_ADDRESS", "entity_value": "12 Oak St", "start_position": 13, "end_position": 22},
            {"entity_type": "GPE", "entity_value": "Springfield", "start_position": 24, "end_position": 35},
            {"entity_type": "DATE_TIME", "entity_value": "1990", "start_position": 46, "end_position": 50},
            {"entity_type": "DATE_TIME", "entity_value": "Monday", "start_position": 54, "end_position": 60},
            {"entity_type": "AGE", "entity_value": "45", "start_position": 67, "end_position": 69},
            {"entity_type": "AGE", "entity_value": "93", "start_position": 74, "end_position": 76},
            {"entity_type": "DATE_TIME", "entity_value": "1/2/2000", "start_position": 78, "end_position": 86},
            {"entity_type": "GPE", "entity_value": "France", "start_position": 88, "end_position": 94}
          ]}]"#;
        let docs = load_presidio_research(json).unwrap();
        let d = &docs[0];
        let labels: Vec<(&str, &GoldLabel)> = d
            .gold
            .iter()
            .map(|g| (&d.text[g.start..g.end], &g.label))
            .collect();
        let phi = |c| GoldLabel::Phi(c);
        let neutral = |s: &str| GoldLabel::Neutral(s.to_owned());
        assert_eq!(
            labels,
            vec![
                ("Zoë", &phi(Category::Person)),
                ("12 Oak St", &phi(Category::StreetAddress)),
                ("Springfield", &phi(Category::City)),
                ("1990", &neutral("DATE_TIME")),
                ("Monday", &neutral("DATE_TIME")),
                ("45", &neutral("AGE")),
                ("93", &phi(Category::Age)),
                ("1/2/2000", &phi(Category::Date)),
                ("France", &neutral("GPE")),
            ]
        );
    }
}
