//! Wire types of the OpenAI and Ollama APIs, the protocol-neutral shape between them, and the
//! SSE/NDJSON codecs. Pure: no IO, no clocks except where a caller passes a time in.
//!
//! The front types (what clients send and receive) derive `utoipa::ToSchema`, so the gateway's
//! OpenAPI document is generated from the same types serde reads and writes; serde's
//! attributes stay authoritative and the schemas follow them.

pub mod canonical;
pub mod codec;
pub mod ollama;
pub mod openai;
pub mod schema;
pub mod signing;

use std::fmt;

/// A client request the gateway cannot accept as written. `param` names the offending field,
/// as OpenAI's error body does; the message never quotes the client's content back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest {
    pub param: Option<String>,
    pub message: String,
}

impl BadRequest {
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        BadRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn new(message: impl Into<String>) -> Self {
        BadRequest {
            param: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BadRequest {}

/// Embedding vectors as base64 of little-endian `f32`, the form the OpenAI clients ask for.
pub mod base64_f32 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub fn encode(v: &[f32]) -> String {
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        STANDARD.encode(bytes)
    }

    pub fn decode(s: &str) -> Option<Vec<f32>> {
        let bytes = STANDARD.decode(s).ok()?;
        if bytes.len() % 4 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

/// RFC 3339 with nanoseconds, as Ollama writes `created_at`.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
