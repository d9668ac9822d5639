//! Upstream streams: the SSE and NDJSON decoders fed the same bytes whole and cut into chunks
//! must reach the same outcome, and every frame is then read as a backend's stream chunk
//! (OpenAI `ChunkIn`, Ollama `LineIn`). The first byte sets the frame limit, the next four
//! where to cut; the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_api::codec::{CodecError, NdjsonDecoder, SseDecoder};
use wardgate_api::{ollama, openai};

type Outcome = Result<Vec<String>, CodecError>;

fn sse(limit: usize, chunks: &[&[u8]]) -> Outcome {
    let mut d = SseDecoder::new(limit);
    let mut frames = Vec::new();
    for c in chunks {
        frames.extend(d.feed(c)?);
    }
    frames.extend(d.finish()?);
    Ok(frames)
}

fn ndjson(limit: usize, chunks: &[&[u8]]) -> Outcome {
    let mut d = NdjsonDecoder::new(limit);
    let mut frames = Vec::new();
    for c in chunks {
        frames.extend(d.feed(c)?);
    }
    frames.extend(d.finish()?);
    Ok(frames)
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let Some((cuts, stream)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let limit = usize::from(limit) * 4 + 1;
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in at {
        chunks.push(&stream[start..cut]);
        start = cut;
    }
    chunks.push(&stream[start..]);

    let whole = sse(limit, &[stream]);
    assert_eq!(
        sse(limit, &chunks),
        whole,
        "SSE outcome depends on chunking"
    );
    let lines = ndjson(limit, &[stream]);
    assert_eq!(
        ndjson(limit, &chunks),
        lines,
        "NDJSON outcome depends on chunking"
    );

    for frame in whole.iter().flatten() {
        if let Ok(chunk) = serde_json::from_str::<openai::ChunkIn>(frame) {
            let _ = chunk.into_parts();
        }
    }
    let mut tool_index = 0;
    for line in lines.iter().flatten() {
        if let Ok(line) = serde_json::from_str::<ollama::LineIn>(line) {
            let _ = line.into_events(&mut tool_index);
        }
    }
});
