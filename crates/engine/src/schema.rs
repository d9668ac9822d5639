//! JSON schemas for constrained output: the bounds a schema must meet before llama.cpp's
//! converter sees it, and the conversion itself, run off the async workers on a thread with
//! an ample stack, time-limited, with a cap on conversions in flight.
//!
//! Why: llama.cpp's converter recurses once per optional property and builds grammar text
//! quadratic in their number; 5,000 properties overflow a Tokio worker's stack (killing the
//! process) and 2,000 take seconds of CPU. A schema past a bound is the client's mistake and
//! is answered 400 naming the bound. A conversion cannot be cancelled once started, so one
//! that overruns its time keeps its permit until it ends: at most `max_concurrent` of them
//! run at once, whatever clients send.
//!
//! Invariant: no error message quotes the schema (it may carry PHI); errors name the keyword
//! and the limit only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::engine::EngineError;

/// Bounds on a JSON schema and on its conversion to a grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Most bytes of schema text.
    pub max_bytes: usize,
    /// Most schema elements in all: properties, enum and const values, `anyOf`/`oneOf`/
    /// `allOf` branches, `prefixItems`, definitions.
    pub max_properties: usize,
    /// Deepest nesting of JSON objects and arrays in the schema.
    pub max_depth: usize,
    /// Largest `minItems`, `maxItems`, `minLength`, `maxLength`, `minProperties`,
    /// `maxProperties`, and `{m,n}` count in a `pattern`.
    pub max_repetition: u64,
    /// Longest a conversion may take before the request is refused.
    pub timeout: Duration,
    /// Conversions running at once (an overrun one counts until it ends).
    pub max_concurrent: usize,
}

impl SchemaLimits {
    pub const DEFAULT: SchemaLimits = SchemaLimits {
        max_bytes: 64 * 1024,
        max_properties: 256,
        max_depth: 32,
        max_repetition: 1_000,
        timeout: Duration::from_secs(2),
        max_concurrent: 2,
    };
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits::DEFAULT
    }
}

/// The stack of a conversion thread: llama.cpp recurses per nesting level and per optional
/// property; the bounds keep that far below this.
const STACK_BYTES: usize = 64 << 20;

/// Checks a schema against the bounds and llama.cpp's supported `pattern` syntax, without
/// converting it. Errors are client errors naming the keyword and the limit.
pub fn check(text: &str, limits: &SchemaLimits) -> Result<Value, EngineError> {
    if text.len() > limits.max_bytes {
        return Err(bad(format!(
            "the JSON schema is larger than {} bytes (engine.schema_max_bytes); simplify it",
            limits.max_bytes
        )));
    }
    let schema: Value = serde_json::from_str(text)
        .map_err(|_| bad("the JSON schema is not valid JSON".to_owned()))?;
    let mut walk = Walk {
        limits,
        elements: 0,
        patterns: 0,
    };
    walk.value(&schema, 1)?;
    Ok(schema)
}

fn bad(message: String) -> EngineError {
    EngineError::BadRequest(message)
}

struct Walk<'a> {
    limits: &'a SchemaLimits,
    elements: usize,
    patterns: usize,
}

const COUNTED_MAPS: [&str; 4] = ["properties", "patternProperties", "$defs", "definitions"];
const COUNTED_LISTS: [&str; 5] = ["enum", "anyOf", "oneOf", "allOf", "prefixItems"];
const REPETITIONS: [&str; 6] = [
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
];

impl Walk<'_> {
    fn count(&mut self, n: usize) -> Result<(), EngineError> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > self.limits.max_properties {
            return Err(bad(format!(
                "the JSON schema has more than {} properties, enum values and alternatives \
                 (engine.schema_max_properties); simplify it",
                self.limits.max_properties
            )));
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<(), EngineError> {
        if depth > self.limits.max_depth {
            return Err(bad(format!(
                "the JSON schema is nested deeper than {} levels (engine.schema_max_depth)",
                self.limits.max_depth
            )));
        }
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    match (k.as_str(), child) {
                        (k, Value::Object(m)) if COUNTED_MAPS.contains(&k) => {
                            self.count(m.len())?
                        }
                        (k, Value::Array(a)) if COUNTED_LISTS.contains(&k) => {
                            self.count(a.len())?
                        }
                        ("const", _) => self.count(1)?,
                        (k, n) if REPETITIONS.contains(&k) => self.repetition(k, n)?,
                        ("pattern", Value::String(p)) => {
                            self.patterns += 1;
                            check_pattern(p, self.limits.max_repetition).map_err(|why| {
                                bad(format!(
                                    "`pattern` #{} of the JSON schema is not supported: {why}; \
                                     constrained output would not enforce it",
                                    self.patterns
                                ))
                            })?;
                        }
                        _ => {}
                    }
                    self.value(child, depth + 1)?;
                }
            }
            Value::Array(a) => {
                for child in a {
                    self.value(child, depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn repetition(&self, keyword: &str, n: &Value) -> Result<(), EngineError> {
        let ok = match n {
            Value::Number(n) => n.as_u64().is_some_and(|n| n <= self.limits.max_repetition),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(bad(format!(
                "`{keyword}` in the JSON schema must be a whole number of at most {} \
                 (engine.schema_max_repetition)",
                self.limits.max_repetition
            )))
        }
    }
}

/// The regular-expression syntax llama.cpp's converter turns into a grammar (mirrors
/// `_pattern_to_rule` in llama.cpp's `json-schema-to-grammar.cpp`). Anything else is not an
/// error there: the converter logs a warning and accepts any string, so the constraint the
/// client asked for would silently not hold. The reason returned is fixed text.
pub fn check_pattern(pattern: &str, max_repetition: u64) -> Result<(), &'static str> {
    let b = pattern.as_bytes();
    if b.len() < 2 || b[0] != b'^' || b[b.len() - 1] != b'$' {
        return Err("it must be anchored with '^' at the start and '$' at the end");
    }
    let sub = &b[1..b.len() - 1];
    let mut i = 0;
    let mut depth = 0usize;
    let mut can_repeat = false;
    while i < sub.len() {
        let c = sub[i];
        match c {
            b'.' => {
                i += 1;
                can_repeat = true;
            }
            b'(' => {
                i += 1;
                if sub.get(i) == Some(&b'?') {
                    if sub.get(i + 1) == Some(&b':') {
                        i += 2;
                    } else {
                        return Err("lookaround, named groups and inline flags are not supported");
                    }
                }
                depth += 1;
                if depth > 100 {
                    return Err("groups are nested too deep");
                }
                can_repeat = false;
            }
            b')' => {
                if depth == 0 {
                    return Err("its parentheses are unbalanced");
                }
                depth -= 1;
                i += 1;
                can_repeat = true;
            }
            b'^' | b'$' => return Err("anchors are allowed only at the start and end"),
            b'[' => {
                i += 1;
                while i < sub.len() && sub[i] != b']' {
                    if sub[i] == b'\\' {
                        let n = gbnf_escape_length(sub, i);
                        if n == 0 {
                            return Err("a character class holds an unsupported escape");
                        }
                        i += n;
                    } else {
                        i += 1;
                    }
                }
                if i >= sub.len() {
                    return Err("a character class is not closed");
                }
                i += 1;
                can_repeat = true;
            }
            b'|' => {
                i += 1;
                can_repeat = false;
            }
            b'*' | b'+' | b'?' => {
                if !can_repeat {
                    return Err("a repetition has nothing to repeat");
                }
                i += 1;
            }
            b'{' => {
                let start = i + 1;
                let Some(len) = sub[start..].iter().position(|&c| c == b'}') else {
                    return Err("a '{' is not closed");
                };
                let inner = &sub[start..start + len];
                i = start + len + 1;
                if !can_repeat {
                    return Err("a repetition has nothing to repeat");
                }
                let parts: Vec<&[u8]> = inner.split(|&c| c == b',').collect();
                if parts.len() > 2 || (parts.len() == 1 && parts[0].is_empty()) {
                    return Err("a '{m,n}' repetition is malformed");
                }
                for p in &parts {
                    if p.is_empty() {
                        continue;
                    }
                    let n = std::str::from_utf8(p)
                        .ok()
                        .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or("a '{m,n}' repetition is malformed")?;
                    if n > max_repetition {
                        return Err("a '{m,n}' count exceeds engine.schema_max_repetition");
                    }
                }
            }
            b'\\' => {
                let Some(&next) = sub.get(i + 1) else {
                    return Err("it ends with a backslash");
                };
                if b"^$.[]()|{}*+?".contains(&next) {
                    i += 2;
                } else {
                    let n = gbnf_escape_length(sub, i);
                    if n == 0 {
                        return Err(
                            "escapes such as \\d, \\w, \\s and \\b are not supported; use a class like [0-9]",
                        );
                    }
                    i += n;
                }
                can_repeat = true;
            }
            b']' | b'}' => return Err("it holds a stray ']' or '}'"),
            _ => {
                i += 1;
                can_repeat = true;
            }
        }
    }
    if depth != 0 {
        return Err("its parentheses are unbalanced");
    }
    Ok(())
}

/// llama.cpp's `gbnf_escape_length`: the escapes its grammar parser reads.
fn gbnf_escape_length(p: &[u8], pos: usize) -> usize {
    if pos + 1 >= p.len() || p[pos] != b'\\' {
        return 0;
    }
    let n_hex = match p[pos + 1] {
        b'x' => 2,
        b'u' => 4,
        b'U' => 8,
        b't' | b'r' | b'n' | b'\\' | b'"' | b'[' | b']' | b'-' => return 2,
        _ => return 0,
    };
    if pos + 2 + n_hex > p.len() {
        return 0;
    }
    if p[pos + 2..pos + 2 + n_hex]
        .iter()
        .all(|h| h.is_ascii_hexdigit())
    {
        2 + n_hex
    } else {
        0
    }
}

/// Converts schemas to grammars within the bounds.
#[derive(Debug)]
pub struct SchemaConverter {
    limits: SchemaLimits,
    permits: Arc<tokio::sync::Semaphore>,
}

impl SchemaConverter {
    pub fn new(limits: SchemaLimits) -> SchemaConverter {
        SchemaConverter {
            limits,
            permits: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
        }
    }

    pub fn limits(&self) -> &SchemaLimits {
        &self.limits
    }

    /// The grammar for a schema: bounds first, then llama.cpp's converter on its own thread.
    pub async fn grammar(&self, text: &str) -> Result<String, EngineError> {
        let schema = check(text, &self.limits)?;
        let timeout = self.limits.timeout;
        let too_slow = || {
            bad(format!(
                "the JSON schema took longer than {} ms to convert to a grammar \
                 (engine.schema_timeout); simplify it",
                timeout.as_millis()
            ))
        };
        // Waiting for a permit counts against the same time: a queue of slow schemas must
        // not hold a request longer than its own conversion could take.
        let started = tokio::time::Instant::now();
        let permit = tokio::time::timeout(timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| EngineError::Busy)?
            .map_err(|_| EngineError::Stopped)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The text llama.cpp reads is the one checked (compact, re-serialised from the tree).
        let text = schema.to_string();
        std::thread::Builder::new()
            .name("wardgate-schema".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let out = llama_cpp_2::json_schema_to_grammar(&text);
                drop(permit);
                let _ = tx.send(out.map_err(|e| e.to_string()));
            })
            .map_err(|_| EngineError::Busy)?;
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx).await {
            Err(_) => Err(too_slow()),
            Ok(Err(_)) => Err(bad("the JSON schema could not be converted".to_owned())),
            Ok(Ok(Ok(grammar))) => Ok(grammar),
            // llama.cpp's message may quote the schema: it is not passed on.
            Ok(Ok(Err(_))) => Err(bad(
                "the JSON schema uses features constrained output does not support \
                 (for example a remote $ref)"
                    .to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn patterns_llama_cpp_cannot_enforce_are_refused() {
        for ok in [
            "^[0-9]{3}-[0-9]{2}$",
            "^(?:a|b)+c?$",
            "^\\.x\\x41[a\\-z]*$",
            "^$",
        ] {
            assert!(check_pattern(ok, 1000).is_ok(), "{ok}");
        }
        for no in [
            "[0-9]+",
            "^abc",
            "^\\d+$",
            "^(?=a)a$",
            "^a^b$",
            "^a{1,2,3}$",
            "^a{5000}$",
            "^(a$",
            "^\\bword$",
            "^a]$",
        ] {
            assert!(check_pattern(no, 1000).is_err(), "{no}");
        }
    }

    #[test]
    fn bounds_name_the_limit() {
        let l = SchemaLimits::DEFAULT;
        let many: serde_json::Map<String, Value> = (0..300)
            .map(|i| (format!("p{i}"), serde_json::json!({"type": "string"})))
            .collect();
        let s = serde_json::json!({"type": "object", "properties": many}).to_string();
        let e = check(&s, &l).unwrap_err().to_string();
        assert!(e.contains("engine.schema_max_properties"), "{e}");
        let s = r#"{"type":"array","minItems":100000}"#;
        let e = check(s, &l).unwrap_err().to_string();
        assert!(e.contains("engine.schema_max_repetition"), "{e}");
        let s = r#"{"type":"string","pattern":"John Smith"}"#;
        let e = check(s, &l).unwrap_err().to_string();
        assert!(e.contains("`pattern`") && !e.contains("John"), "{e}");
        let s = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(
            check(&s, &l)
                .unwrap_err()
                .to_string()
                .contains("schema_max_depth")
        );
        let s = format!(r#"{{"description":"{}"}}"#, "x".repeat(70_000));
        assert!(
            check(&s, &l)
                .unwrap_err()
                .to_string()
                .contains("schema_max_bytes")
        );
    }
}
