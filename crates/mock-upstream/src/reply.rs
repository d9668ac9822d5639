//! What the mock "model" says: the token texts (counted or echoed), token limits, tool calls,
//! prompt word counts and deterministic embedding vectors.

use serde_json::Value;

/// The arguments of the one tool call the mock makes, as a JSON text.
pub(crate) const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// The same arguments cut into fragments, for streamed OpenAI tool calls.
pub(crate) const TOOL_ARGUMENT_FRAGMENTS: [&str; 3] = [r#"{"city":"#, r#""Paris""#, "}"];
pub(crate) const TOOL_CALL_ID: &str = "call_mock_0";
pub(crate) const ECHO_PREFIX: &str = "echo:";

/// The texts of a reply's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tokens {
    /// `tok0 `, `tok1 `, ... up to the count.
    Counted(usize),
    /// Echo mode: the given chunks.
    Echo(Vec<String>),
}

impl Tokens {
    /// Echo mode when `prompt` starts with `echo:` (the rest, in chunks of at most 3
    /// characters), else `configured` counted tokens.
    pub(crate) fn for_prompt(prompt: &str, configured: usize) -> Self {
        match prompt.strip_prefix(ECHO_PREFIX) {
            Some(rest) => {
                let chars: Vec<char> = rest.chars().collect();
                Tokens::Echo(chars.chunks(3).map(|c| c.iter().collect()).collect())
            }
            None => Tokens::Counted(configured),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Tokens::Counted(n) => *n,
            Tokens::Echo(chunks) => chunks.len(),
        }
    }

    pub(crate) fn text(&self, index: usize) -> String {
        match self {
            Tokens::Counted(_) => format!("tok{index} "),
            Tokens::Echo(chunks) => chunks.get(index).cloned().unwrap_or_default(),
        }
    }

    pub(crate) fn full_text(&self) -> String {
        (0..self.len()).map(|i| self.text(i)).collect()
    }

    /// Cuts the reply to `max` tokens; the finish is `Length` only when that removed some.
    pub(crate) fn limit(self, max: Option<usize>) -> (Self, Finish) {
        match max {
            Some(max) if max < self.len() => {
                let cut = match self {
                    Tokens::Counted(_) => Tokens::Counted(max),
                    Tokens::Echo(mut chunks) => {
                        chunks.truncate(max);
                        Tokens::Echo(chunks)
                    }
                };
                (cut, Finish::Length)
            }
            Some(_) | None => (self, Finish::Stop),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What a chat or completion answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Text {
        tokens: Tokens,
        finish: Finish,
    },
    /// One call of the named tool with [`TOOL_ARGUMENTS`].
    ToolCall {
        name: String,
    },
}

impl Reply {
    pub(crate) fn text(prompt: &str, configured: usize, max: Option<usize>) -> Self {
        let (tokens, finish) = Tokens::for_prompt(prompt, configured).limit(max);
        Reply::Text { tokens, finish }
    }

    /// The completion token count reported in usage and metrics.
    pub(crate) fn completion_tokens(&self) -> u64 {
        match self {
            Reply::Text { tokens, .. } => tokens.len() as u64,
            Reply::ToolCall { .. } => 1,
        }
    }
}

/// Whitespace-separated words, the mock's stand-in for a tokenizer.
pub(crate) fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of a message `content`: a string, or the `text` parts of an OpenAI part array
/// joined by spaces. Anything else has no text.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Chat messages reduced to what the mock needs: the prompt word count over every message,
/// and the content of the last user message (where echo mode is looked for).
pub(crate) fn read_messages(messages: &[Value]) -> (u64, String) {
    let prompt_tokens = messages
        .iter()
        .map(|m| word_count(&content_text(m.get("content"))))
        .sum();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    (prompt_tokens, last_user)
}

/// The name of the first tool's function when `tools` is a non-empty array.
pub(crate) fn first_tool_name(tools: Option<&Value>) -> Option<String> {
    let first = tools?.as_array()?.first()?;
    let name = first
        .pointer("/function/name")
        .and_then(Value::as_str)
        .unwrap_or("tool");
    Some(name.to_owned())
}

/// A deterministic, L2-normalised vector for `text`: FNV-1a over the bytes seeds a xorshift
/// generator.
pub(crate) fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes(), 0xcbf2_9ce4_8422_2325);
    if state == 0 {
        state = 0x9e37_79b9_7f4a_7c15;
    }
    let mut vector: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The top 24 bits as a fraction in [0, 1), then moved to [-1, 1).
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

pub(crate) fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A stable 64-hex-digit digest for a model name.
pub(crate) fn digest(name: &str) -> String {
    (0..4u64)
        .map(|i| format!("{:016x}", fnv1a(name.as_bytes(), 0xcbf2_9ce4_8422_2325 ^ i)))
        .collect()
}

/// Whether `requested` names `known`, where a missing tag means `:latest` (the Ollama rule).
pub(crate) fn model_matches(known: &str, requested: &str) -> bool {
    fn base(name: &str) -> &str {
        name.strip_suffix(":latest").unwrap_or(name)
    }
    known == requested || base(known) == base(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_splits_on_char_boundaries() {
        let tokens = Tokens::for_prompt("echo:héllo wörld", 8);
        assert_eq!(
            tokens,
            Tokens::Echo(vec!["hél".into(), "lo ".into(), "wör".into(), "ld".into()])
        );
        assert_eq!(tokens.full_text(), "héllo wörld");
    }

    #[test]
    fn counted_tokens_and_limits() {
        let (tokens, finish) = Tokens::for_prompt("hi", 4).limit(Some(2));
        assert_eq!(tokens.full_text(), "tok0 tok1 ");
        assert_eq!(finish, Finish::Length);
        let (tokens, finish) = Tokens::for_prompt("hi", 4).limit(Some(4));
        assert_eq!(tokens.len(), 4);
        assert_eq!(finish, Finish::Stop);
    }

    #[test]
    fn embeddings_are_deterministic_and_normalised() {
        let a = embedding("hello", 16);
        assert_eq!(a, embedding("hello", 16));
        assert_ne!(a, embedding("hello!", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn tool_fragments_join_to_the_arguments() {
        assert_eq!(TOOL_ARGUMENT_FRAGMENTS.concat(), TOOL_ARGUMENTS);
    }

    #[test]
    fn digests_are_64_hex() {
        let d = digest("mock-model");
        assert_eq!(d.len(), 64);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn latest_tag_is_implied() {
        assert!(model_matches("mock-model", "mock-model:latest"));
        assert!(model_matches("m:latest", "m"));
        assert!(!model_matches("m", "m:7b"));
    }
}
