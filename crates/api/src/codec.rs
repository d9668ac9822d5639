//! Incremental decoders for the two streaming framings backends speak: NDJSON (Ollama) and
//! server-sent events (OpenAI-compatible servers).
//!
//! Both take bytes as they arrive, in chunks cut anywhere (mid-line, mid-UTF-8 character), and
//! yield complete frames. Both refuse to buffer a frame longer than a set bound, so a broken or
//! hostile backend cannot make the gateway hold unbounded memory.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("stream frame longer than {limit} bytes")]
    FrameTooLong { limit: usize },
    #[error("stream frame is not UTF-8")]
    NotUtf8,
}

/// Splits a byte stream into lines on `\n`, `\r\n` or a lone `\r`.
#[derive(Debug)]
struct LineSplitter {
    buf: Vec<u8>,
    limit: usize,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk belongs to it.
    pending_cr: bool,
}

impl LineSplitter {
    fn new(limit: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            limit,
            pending_cr: false,
        }
    }

    fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<String>) -> Result<(), CodecError> {
        // An empty chunk says nothing about the byte after a `\r`: keep waiting for it, or a
        // `\r\n` cut around an empty chunk would end two lines.
        if self.pending_cr && !chunk.is_empty() {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if b == b'\n' || b == b'\r' {
                self.push(&chunk[start..i])?;
                out.push(self.take_line()?);
                if b == b'\r' {
                    if i + 1 < chunk.len() {
                        if chunk[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.pending_cr = true;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.push(&chunk[start..])
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        if self.buf.len() + bytes.len() > self.limit {
            self.buf.clear();
            return Err(CodecError::FrameTooLong { limit: self.limit });
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn take_line(&mut self) -> Result<String, CodecError> {
        let bytes = std::mem::take(&mut self.buf);
        String::from_utf8(bytes).map_err(|_| CodecError::NotUtf8)
    }

    /// What is left when the stream ends without a final newline.
    fn finish(&mut self) -> Result<Option<String>, CodecError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.take_line().map(Some)
    }
}

/// Hands out the frames a chunk completed before a fault, and keeps the fault for the next
/// call (and every call after it). A stream that has said all it had to say before the fault
/// (an answer's last frame, then junk in the same read) thereby ends the same way whether the
/// junk came in the same chunk or a later one; the caller stops reading before it asks again.
fn settle(
    frames: Vec<String>,
    result: Result<(), CodecError>,
    failed: &mut Option<CodecError>,
) -> Result<Vec<String>, CodecError> {
    match result {
        Ok(()) => Ok(frames),
        Err(e) => {
            *failed = Some(e.clone());
            if frames.is_empty() {
                Err(e)
            } else {
                Ok(frames)
            }
        }
    }
}

/// NDJSON: one JSON document per non-empty line.
#[derive(Debug)]
pub struct NdjsonDecoder {
    lines: LineSplitter,
    failed: Option<CodecError>,
}

impl NdjsonDecoder {
    pub fn new(max_line: usize) -> Self {
        NdjsonDecoder {
            lines: LineSplitter::new(max_line),
            failed: None,
        }
    }

    /// Feeds a chunk; returns the complete, non-blank lines it finished. After a fault the
    /// lines before it are returned first and the fault on the next call.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut lines = Vec::new();
        let split = self.lines.feed(chunk, &mut lines);
        lines.retain(|l| !l.trim().is_empty());
        settle(lines, split, &mut self.failed)
    }

    /// The last line, if the stream ended without a newline after it.
    pub fn finish(&mut self) -> Result<Option<String>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        Ok(self.lines.finish()?.filter(|l| !l.trim().is_empty()))
    }
}

/// Server-sent events: yields the `data` of each event. Comment lines (`:`) and fields other
/// than `data` are skipped, `data:` with or without a space is accepted, and several `data`
/// lines of one event are joined with `\n`, as the SSE specification says.
#[derive(Debug)]
pub struct SseDecoder {
    lines: LineSplitter,
    data: Option<String>,
    limit: usize,
    failed: Option<CodecError>,
}

impl SseDecoder {
    pub fn new(max_event: usize) -> Self {
        SseDecoder {
            lines: LineSplitter::new(max_event),
            data: None,
            limit: max_event,
            failed: None,
        }
    }

    /// Feeds a chunk; returns the events it completed. After a fault the events before it
    /// are returned first and the fault on the next call.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut lines = Vec::new();
        // The lines completed before a framing fault come earlier in the stream than the
        // fault, so they are read first: the error reported is the stream's first, however
        // the chunks were cut.
        let mut result = self.lines.feed(chunk, &mut lines);
        let mut events = Vec::new();
        for line in lines {
            if let Err(e) = self.line(line, &mut events) {
                result = Err(e);
                break;
            }
        }
        settle(events, result, &mut self.failed)
    }

    /// Dispatches an event left open when the stream ended.
    pub fn finish(&mut self) -> Result<Option<String>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        if let Some(line) = self.lines.finish()? {
            self.line(line, &mut events)?;
        }
        Ok(events.pop().or_else(|| self.data.take()))
    }

    fn line(&mut self, line: String, events: &mut Vec<String>) -> Result<(), CodecError> {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        if field != "data" {
            return Ok(());
        }
        match &mut self.data {
            Some(data) => {
                if data.len() + value.len() + 1 > self.limit {
                    self.data = None;
                    return Err(CodecError::FrameTooLong { limit: self.limit });
                }
                data.push('\n');
                data.push_str(value);
            }
            None => self.data = Some(value.to_owned()),
        }
        Ok(())
    }
}

/// Encodes one SSE event carrying `data`.
pub fn sse_event(data: &str) -> bytes::Bytes {
    let mut out = String::with_capacity(data.len() + 8);
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    bytes::Bytes::from(out)
}

/// Encodes one NDJSON line.
pub fn ndjson_line(json: &str) -> bytes::Bytes {
    let mut out = String::with_capacity(json.len() + 1);
    out.push_str(json);
    out.push('\n');
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` cut at every possible position and checks the result never depends on
    /// where the cuts fall.
    fn sse_all_splits(input: &str) -> Vec<String> {
        let bytes = input.as_bytes();
        let mut whole = SseDecoder::new(1024);
        let mut expected = whole.feed(bytes).unwrap_or_default();
        expected.extend(whole.finish().unwrap_or_default());
        for cut in 0..=bytes.len() {
            let mut d = SseDecoder::new(1024);
            let mut got = d.feed(&bytes[..cut]).unwrap_or_default();
            got.extend(d.feed(&bytes[cut..]).unwrap_or_default());
            got.extend(d.finish().unwrap_or_default());
            assert_eq!(got, expected, "cut at {cut}");
        }
        expected
    }

    #[test]
    fn sse_accepts_every_line_ending_comments_and_multiline_data() {
        let cases: &[(&str, &[&str])] = &[
            ("data: a\n\ndata: b\n\n", &["a", "b"]),
            ("data: a\r\n\r\ndata:b\r\n\r\n", &["a", "b"]),
            ("data: a\r\rdata: b\r\r", &["a", "b"]),
            (": ping - 2024\r\n\r\ndata: x\r\n\r\n", &["x"]),
            (
                "event: message\nid: 3\ndata: one\ndata: two\n\n",
                &["one\ntwo"],
            ),
            ("data: [DONE]\n\n", &["[DONE]"]),
            (
                "data: tail-without-blank-line",
                &["tail-without-blank-line"],
            ),
            ("data: é😀\n\n", &["é😀"]),
        ];
        for (input, want) in cases {
            assert_eq!(sse_all_splits(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn ndjson_splits_lines_across_chunks() {
        let input = "{\"a\":1}\n\n{\"b\":\"é\"}\r\n{\"c\":3}";
        let bytes = input.as_bytes();
        for cut in 0..=bytes.len() {
            let mut d = NdjsonDecoder::new(64);
            let mut got = d.feed(&bytes[..cut]).unwrap_or_default();
            got.extend(d.feed(&bytes[cut..]).unwrap_or_default());
            got.extend(d.finish().unwrap_or_default());
            assert_eq!(
                got,
                ["{\"a\":1}", "{\"b\":\"é\"}", "{\"c\":3}"],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn frames_over_the_limit_are_refused() {
        let mut d = NdjsonDecoder::new(8);
        assert_eq!(
            d.feed(b"0123456789"),
            Err(CodecError::FrameTooLong { limit: 8 })
        );
        let mut s = SseDecoder::new(8);
        assert!(s.feed(b"data: 0123456789abc\n").is_err());
        let mut u = NdjsonDecoder::new(8);
        assert_eq!(u.feed(b"\xff\xfe\n"), Err(CodecError::NotUtf8));
    }

    #[test]
    fn frames_before_a_fault_come_first_then_the_fault_stays() {
        let mut d = NdjsonDecoder::new(64);
        assert_eq!(
            d.feed(b"{\"done\":true}\n\xff\n"),
            Ok(vec!["{\"done\":true}".to_owned()])
        );
        assert_eq!(d.feed(b"{}\n"), Err(CodecError::NotUtf8));
        assert_eq!(d.finish(), Err(CodecError::NotUtf8));
        let mut s = SseDecoder::new(64);
        assert_eq!(
            s.feed(b"data: [DONE]\n\n\xff\n"),
            Ok(vec!["[DONE]".to_owned()])
        );
        assert_eq!(s.finish(), Err(CodecError::NotUtf8));
    }

    /// Two ways chunk boundaries used to change what a stream decoded to (found by the
    /// chunking property in tests/codec_props.rs).
    #[test]
    fn chunk_boundaries_do_not_change_the_outcome() {
        // A `\r\n` with an empty chunk between its halves is one line ending, not two.
        let mut d = SseDecoder::new(64);
        let mut got = Vec::new();
        for chunk in [&b"data: a\r"[..], b"", b"\ndata: b\n\n"] {
            got.extend(d.feed(chunk).unwrap_or_default());
        }
        assert_eq!(got, ["a\nb"]);
        // The first fault in the stream is the one reported: here an event growing past the
        // limit, before a line that is not UTF-8, whether they come in one chunk or two.
        let stream = b"data:01234\ndata:56789\n\xff\n";
        let too_long = Err(CodecError::FrameTooLong { limit: 10 });
        assert_eq!(SseDecoder::new(10).feed(stream), too_long);
        let mut d = SseDecoder::new(10);
        assert_eq!(d.feed(&stream[..11]), Ok(vec![]));
        assert_eq!(d.feed(&stream[11..]), too_long);
    }

    #[test]
    fn encoders_frame_correctly() {
        assert_eq!(&sse_event("{}")[..], b"data: {}\n\n");
        assert_eq!(&ndjson_line("{}")[..], b"{}\n");
    }
}
