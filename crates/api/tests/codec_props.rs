//! Properties of the stream decoders: what a byte stream decodes to (its frames up to the
//! first fault, and that fault) never depends on where the stream was cut into chunks (empty
//! chunks included), arbitrary bytes never panic, and what the encoders write decodes back to
//! what they were given.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use wardgate_api::codec::{CodecError, NdjsonDecoder, SseDecoder, ndjson_line, sse_event};

/// The frames a decoder yielded, up to and with the first error it reported.
type Outcome = (Vec<String>, Option<CodecError>);

trait Decoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError>;
    fn finish(&mut self) -> Result<Option<String>, CodecError>;
}

impl Decoder for SseDecoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        SseDecoder::feed(self, chunk)
    }
    fn finish(&mut self) -> Result<Option<String>, CodecError> {
        SseDecoder::finish(self)
    }
}

impl Decoder for NdjsonDecoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        NdjsonDecoder::feed(self, chunk)
    }
    fn finish(&mut self) -> Result<Option<String>, CodecError> {
        NdjsonDecoder::finish(self)
    }
}

fn run(mut d: impl Decoder, chunks: &[&[u8]]) -> Outcome {
    let mut frames = Vec::new();
    for chunk in chunks {
        match d.feed(chunk) {
            Ok(more) => frames.extend(more),
            Err(e) => return (frames, Some(e)),
        }
    }
    match d.finish() {
        Ok(last) => frames.extend(last),
        Err(e) => return (frames, Some(e)),
    }
    (frames, None)
}

/// `bytes` cut at `cuts` (positions taken modulo the length, sorted; repeats make empty chunks).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    chunks
}

fn line_ending() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
}

/// Text shaped like an SSE stream: data, comments, other fields, blank lines, any line
/// endings, multi-byte characters, and now and then a stray non-UTF-8 byte.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "data: [a-zé😀{}\":, ]{0,20}",
        "data:[a-z]{0,5}",
        ": [a-z ]{0,10}",
        "(event|id|retry): [a-z0-9]{0,6}",
        "data",
        Just(String::new()),
        Just("data: [DONE]".to_owned()),
    ];
    proptest::collection::vec((line, line_ending(), proptest::bool::weighted(0.02)), 0..24)
        .prop_map(|lines| {
            let mut out = Vec::new();
            for (text, end, bad) in lines {
                out.extend_from_slice(text.as_bytes());
                if bad {
                    out.push(0xff);
                }
                out.extend_from_slice(end.as_bytes());
            }
            out
        })
}

fn ndjson_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "\\{\"[a-z]{1,4}\":\"[a-zé😀 ]{0,16}\"\\}",
        "[ \t]{0,3}",
        "[a-z0-9\\[\\]{}]{0,30}",
    ];
    proptest::collection::vec((line, line_ending()), 0..24).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|(text, end)| [text, end.to_owned()])
            .collect::<String>()
            .into_bytes()
    })
}

fn any_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => sse_like(),
        2 => ndjson_like(),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => proptest::collection::vec(proptest::sample::select(b"\r\n:da ta\xff".to_vec()), 0..64),
    ]
}

/// Small limits exercise the frame-too-long path; the large one never trips.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![Just(8usize), Just(24), Just(1 << 16)]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sse_outcome_does_not_depend_on_chunking(
        bytes in any_stream(), cuts in cuts(), limit in limit(),
    ) {
        let whole = run(SseDecoder::new(limit), &[bytes.as_slice()]);
        let chunked = run(SseDecoder::new(limit), &split(&bytes, &cuts));
        prop_assert_eq!(&chunked, &whole);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(run(SseDecoder::new(limit), &bytewise), whole);
    }

    #[test]
    fn ndjson_outcome_does_not_depend_on_chunking(
        bytes in any_stream(), cuts in cuts(), limit in limit(),
    ) {
        let whole = run(NdjsonDecoder::new(limit), &[bytes.as_slice()]);
        let chunked = run(NdjsonDecoder::new(limit), &split(&bytes, &cuts));
        prop_assert_eq!(&chunked, &whole);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(run(NdjsonDecoder::new(limit), &bytewise), whole);
    }

    /// Frames never exceed the limit and NDJSON frames are never blank.
    #[test]
    fn frames_respect_the_limit(bytes in any_stream(), cuts in cuts(), limit in limit()) {
        let chunks = split(&bytes, &cuts);
        let (frames, _) = run(SseDecoder::new(limit), &chunks);
        prop_assert!(frames.iter().all(|f| f.len() <= limit));
        let (frames, _) = run(NdjsonDecoder::new(limit), &chunks);
        prop_assert!(frames.iter().all(|f| f.len() <= limit && !f.trim().is_empty()));
    }

    /// What the gateway writes to its clients decodes back to the same JSON documents, however
    /// a client's reads cut it.
    #[test]
    fn encoded_json_frames_decode_back(
        texts in proptest::collection::vec(any::<String>(), 0..8), cuts in cuts(),
    ) {
        let docs: Vec<String> = texts
            .iter()
            .map(|t| serde_json::json!({"content": t}).to_string())
            .collect();
        let sse: Vec<u8> = docs.iter().flat_map(|d| sse_event(d).to_vec()).collect();
        let ndjson: Vec<u8> = docs.iter().flat_map(|d| ndjson_line(d).to_vec()).collect();
        prop_assert_eq!(run(SseDecoder::new(1 << 20), &split(&sse, &cuts)), (docs.clone(), None));
        prop_assert_eq!(run(NdjsonDecoder::new(1 << 20), &split(&ndjson, &cuts)), (docs, None));
    }
}
