//! Request bodies as the gateway parses them: `serde_json::from_slice` into each front's
//! request type (recursion limit on), then `into_canonical`. Must never panic or overflow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use wardgate_api::{ollama, openai};

fn parse<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = parse::<openai::ChatCompletionRequest>(data) {
        let _ = (r.wants_stream(), r.include_usage());
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<openai::CompletionRequestIn>(data) {
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<openai::EmbeddingRequestIn>(data) {
        let _ = r.encoding();
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<ollama::ChatRequestIn>(data) {
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<ollama::GenerateRequestIn>(data) {
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<ollama::EmbedRequestIn>(data) {
        let _ = r.into_canonical();
    }
    let _ = parse::<ollama::EmbeddingsRequestIn>(data);
    if let Some(r) = parse::<ollama::ShowRequestIn>(data) {
        let _ = r.model();
    }
});
