//! Durations as the config writes them: `30s`, `5m`, `1h 30m` (humantime), checked when the
//! file is read, so a bad one is refused naming its dotted key.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configured duration. Whether zero is allowed is the key's validation's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::ops::Deref for HumanDuration {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        if matches!(v.trim(), "0" | "0s") {
            return Ok(HumanDuration(Duration::ZERO));
        }
        humantime::parse_duration(v)
            .map(HumanDuration)
            .map_err(|e| format!("`{v}` is not a duration like `30s` or `5m`: {e}"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like `30s` or `5m`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Written back exactly (the environment layer re-reads the document).
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "{}s {}ns",
            self.0.as_secs(),
            self.0.subsec_nanos()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for (text, d) in [
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h 30m", Duration::from_secs(5400)),
            ("0", Duration::ZERO),
            (" 0s ", Duration::ZERO),
            ("1500ms", Duration::from_millis(1500)),
        ] {
            let h: HumanDuration = text.parse().unwrap();
            assert_eq!(h.0, d, "{text}");
            let mut out = String::new();
            h.serialize(toml::ser::ValueSerializer::new(&mut out))
                .unwrap();
            let back: HumanDuration = out.trim_matches('"').parse().unwrap();
            assert_eq!(back, h, "{out}");
        }
        let err = "soon".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("is not a duration like `30s`"), "{err}");
    }
}
