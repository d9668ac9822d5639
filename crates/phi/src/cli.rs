//! What `wardgate phi scan` and `wardgate phi redact` print, kept here so that it is tested
//! without a process: input decoding with an error that names the file, and one JSON object
//! per finding.

use serde::Serialize;

use crate::{Category, Detector};

/// Input that cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The bytes are not UTF-8; offsets would mean nothing.
    #[error("{name}: not valid UTF-8 (first invalid byte at offset {offset})")]
    NotUtf8 { name: String, offset: usize },
}

/// Turns the bytes read from `name` (a path, or `-` for standard input) into text.
pub fn decode_input(name: &str, bytes: Vec<u8>) -> Result<String, InputError> {
    String::from_utf8(bytes).map_err(|e| InputError::NotUtf8 {
        name: name.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// One finding, as printed by `wardgate phi scan`.
#[derive(Debug, Serialize)]
pub struct Finding<'a> {
    /// Present when several files were scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    pub category: Category,
    /// Byte offsets into the UTF-8 input.
    pub start: usize,
    pub end: usize,
    pub text: &'a str,
    /// Rounded to two decimals: more digits of an f32 would only be noise.
    pub score: f64,
}

/// The JSON lines (no trailing newline on each) for the findings in `text`.
pub fn scan_lines(detector: &Detector, text: &str, file: Option<&str>) -> Vec<String> {
    detector
        .detect(text)
        .iter()
        .map(|s| {
            let f = Finding {
                file,
                category: s.category,
                start: s.start,
                end: s.end,
                text: s.text(text),
                score: (f64::from(s.score) * 100.0).round() / 100.0,
            };
            // Serialising plain strings and numbers cannot fail.
            serde_json::to_string(&f).unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn scan_prints_one_object_per_finding_with_byte_offsets() {
        let text = "Café note — SSN 123-45-6789";
        let lines = scan_lines(Detector::shared(), text, None);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["category"], "SSN");
        assert_eq!(v["text"], "123-45-6789");
        let (s, e) = (
            v["start"].as_u64().unwrap() as usize,
            v["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&text[s..e], "123-45-6789");
        assert!(v.get("file").is_none());
        let with_file = scan_lines(Detector::shared(), text, Some("a.txt"));
        assert!(
            with_file[0].starts_with("{\"file\":\"a.txt\""),
            "{with_file:?}"
        );
    }

    #[test]
    fn non_utf8_input_names_the_file() {
        let err = decode_input("notes.txt", vec![b'o', b'k', 0xff]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "notes.txt: not valid UTF-8 (first invalid byte at offset 2)"
        );
        assert_eq!(decode_input("-", b"fine".to_vec()).unwrap(), "fine");
    }
}
