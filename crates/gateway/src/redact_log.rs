//! PHI redaction of everything wardgate writes to its logs: a `tracing` writer that passes each
//! formatted event through the `phi` redactor before it reaches the output, and a panic hook
//! that does the same to panic messages (which can quote data). This sits on top of never
//! logging bodies at all: it catches what slips through a field or an error message.
//!
//! The service's own configuration is not PHI, and an operator must be able to read it in the
//! log (where it listens, which backend failed, which file it could not open). The writer
//! holds the text the operator configured ([`Configured`]: listen and bound addresses, backend
//! URLs, file paths, model names); an identifier the detector finds is left as written only
//! when it lies wholly inside an occurrence of one of those texts in the line. Whatever else a
//! line holds is redacted as before, so what stays readable is always text of the
//! configuration, never anything a request brought: a client's model name, path or header
//! value is redacted unless it *is* configured text, and configured text beside it does not
//! shield it.
//!
//! Colour: the text format is coloured only on a terminal. The escape sequences it then
//! writes are taken out before detection (inside them, `[2m2025-…` read as a device serial);
//! a line with nothing to redact is written with its colours, one with something to redact is
//! written redacted and plain.
//!
//! Invariant: no log output path bypasses this module once `init` has run.

use std::io::{self, Write};
use std::sync::{Arc, PoisonError, RwLock};

use tracing_subscriber::fmt::MakeWriter;
use wardgate_phi::Detector;

/// Text the operator configured, which log lines may quote as written (see the module
/// comment). Shared: the server adds its bound address once it listens.
#[derive(Debug, Default)]
pub struct Configured(RwLock<Vec<String>>);

impl Configured {
    /// Nothing configured: every identifier is redacted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the configuration's own text (empty text is ignored: it would shield nothing).
    pub fn add(&self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        let mut texts = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if !texts.contains(&text) {
            texts.push(text);
        }
    }

    /// `line` with every identifier the detector finds replaced by `[CATEGORY]`, except those
    /// wholly inside an occurrence of configured text.
    pub fn redact(&self, line: &str) -> String {
        let texts = self.0.read().unwrap_or_else(PoisonError::into_inner);
        redact_line(line, &texts)
    }
}

/// [`Configured::redact`], on `configured` texts.
fn redact_line(line: &str, configured: &[String]) -> String {
    let plain = strip_colours(line);
    let spans: Vec<_> = Detector::shared()
        .detect(&plain)
        .into_iter()
        .filter(|s| !inside_configured(&plain, s.start, s.end, configured))
        .filter(|s| !is_request_id(&plain, s.start, s.end))
        .collect();
    if spans.is_empty() {
        // Nothing to redact: the line as formatted, colours and all (escape sequences hold no
        // text, and the formatter escapes any that a field's value carried).
        return line.to_owned();
    }
    let mut out = String::with_capacity(plain.len());
    let mut at = 0;
    for s in &spans {
        out.push_str(plain.get(at..s.start).unwrap_or(""));
        out.push('[');
        out.push_str(s.category.name());
        out.push(']');
        at = s.end;
    }
    out.push_str(plain.get(at..).unwrap_or(""));
    out
}

/// Whether `start..end` of `line` is a request id the gateway made (a UUID as 32 lower-case hex
/// digits) in a `request_id` field, text or JSON format. The id is the gateway's own, not
/// anything a request brought, and an operator needs it to match the log to the audit log and
/// to the client's `x-request-id`; a black-box test found every request line showing `[ID]`.
fn is_request_id(line: &str, start: usize, end: usize) -> bool {
    let Some(value) = line.get(start..end) else {
        return false;
    };
    let before = line.get(..start).unwrap_or("");
    value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (before.ends_with("request_id=") || before.ends_with("\"request_id\":\""))
}

/// Whether `start..end` of `line` lies within one occurrence of a configured text.
fn inside_configured(line: &str, start: usize, end: usize, configured: &[String]) -> bool {
    configured.iter().any(|text| {
        line.match_indices(text.as_str())
            .any(|(at, _)| at <= start && end <= at + text.len())
    })
}

/// `line` without the colour and style sequences (`ESC [ parameters final-byte`) the text
/// format writes on a terminal; anything else is kept as it is.
fn strip_colours(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('\x1b') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameter and intermediate bytes, then one final byte in `@..=~`.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Makes writers that redact one formatted event at a time.
#[derive(Clone, Debug)]
pub struct RedactingMakeWriter<M> {
    inner: M,
    configured: Arc<Configured>,
}

impl<M> RedactingMakeWriter<M> {
    /// A writer that redacts every identifier.
    pub fn new(inner: M) -> Self {
        Self::keeping(inner, Arc::new(Configured::new()))
    }

    /// A writer that leaves the `configured` text readable (see the module comment).
    pub fn keeping(inner: M, configured: Arc<Configured>) -> Self {
        RedactingMakeWriter { inner, configured }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buf: Vec::with_capacity(256),
            inner: self.inner.make_writer(),
            configured: self.configured.clone(),
        }
    }
}

/// Buffers one event (the formatter writes an event through one writer, then drops it) and
/// writes it redacted when dropped or flushed.
pub struct RedactingWriter<W: Write> {
    buf: Vec<u8>,
    inner: W,
    configured: Arc<Configured>,
}

impl<W: Write> RedactingWriter<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let redacted = self.configured.redact(&text);
        self.buf.clear();
        self.inner.write_all(redacted.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write from here; the line is lost, never written
        // unredacted.
        let _ = self.emit();
    }
}

/// Replaces the panic hook with one that redacts the message before writing it to stderr.
/// The payload of a panic can quote whatever the panicking code was handling.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let line = format!(
            "thread '{}' panicked at {location}: {message}\n",
            thread.name().unwrap_or("unnamed")
        );
        let redacted = Detector::shared().redact(&line);
        let _ = io::stderr().write_all(redacted.as_bytes());
    }));
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    #[test]
    fn log_events_are_redacted_before_they_are_written() {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(RedactingMakeWriter::new(sink.clone()))
            .json()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                detail = "patient SSN 123-45-6789, email jane.doe@example.org",
                "oops"
            );
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains("123-45-6789"), "{out}");
        assert!(!out.contains("jane.doe@example.org"), "{out}");
        assert!(out.contains("[SSN]") && out.contains("[EMAIL]"), "{out}");
        // Still one JSON object per line.
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["level"], "WARN");
    }

    #[test]
    fn the_gateways_request_ids_stay_readable_and_nothing_else_does() {
        let id = "019af3c2d8e47a5bb1c2d3e4f5a6b7c8";
        let text = format!("INFO request_id={id} status=200 detail=\"MRN {id}\"");
        let out = redact_line(&text, &[]);
        assert!(out.contains(&format!("request_id={id}")), "{out}");
        assert!(
            out.contains("MRN [") && out.matches(id).count() == 1,
            "{out}"
        );
        let json = format!("{{\"request_id\":\"{id}\",\"ssn\":\"123-45-6789\"}}");
        let out = redact_line(&json, &[]);
        assert!(out.contains(id) && !out.contains("123-45-6789"), "{out}");
        // Only the id's exact shape: a longer or upper-case value is redacted as before.
        let out = redact_line("request_id=123-45-6789", &[]);
        assert!(!out.contains("123-45-6789"), "{out}");
    }

    #[test]
    fn text_without_phi_passes_unchanged() {
        let sink = Sink::default();
        {
            let mut w = RedactingMakeWriter::new(sink.clone()).make_writer();
            w.write_all(b"request status=200 latency_ms=1.234\n")
                .unwrap();
        }
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "request status=200 latency_ms=1.234\n");
    }

    fn configured(texts: &[&str]) -> Configured {
        let c = Configured::new();
        for t in texts {
            c.add(*t);
        }
        c
    }

    /// What the operator configured stays readable; what a request brought is redacted, also
    /// when it sits beside configured text or contains it.
    #[test]
    fn configured_text_stays_readable_and_request_text_does_not() {
        let c = configured(&[
            "127.0.0.1:18080",
            "http://127.0.0.1:18080",
            "http://10.0.0.5:11434/v1",
        ]);
        for (line, want) in [
            // The server's own lines, text and JSON.
            (
                "INFO wardgate: wardgate listening addr=127.0.0.1:18080 url=http://127.0.0.1:18080",
                "INFO wardgate: wardgate listening addr=127.0.0.1:18080 url=http://127.0.0.1:18080",
            ),
            (
                r#"{"level":"INFO","message":"wardgate listening","addr":"127.0.0.1:18080","url":"http://127.0.0.1:18080"}"#,
                r#"{"level":"INFO","message":"wardgate listening","addr":"127.0.0.1:18080","url":"http://127.0.0.1:18080"}"#,
            ),
            (
                "WARN backend is not usable backend=b0 url=http://10.0.0.5:11434/v1 reason=refused",
                "WARN backend is not usable backend=b0 url=http://10.0.0.5:11434/v1 reason=refused",
            ),
            // A client's model name, a path, a header value.
            (
                "INFO wardgate::request: request route=/v1/chat/completions model=jane.doe@example.org",
                "INFO wardgate::request: request route=/v1/chat/completions model=[EMAIL]",
            ),
            ("path=/v1/models/10.9.8.7", "path=/v1/models/[IP_ADDRESS]"),
            ("forwarded=203.0.113.9", "forwarded=[IP_ADDRESS]"),
            // Configured text beside PHI does not shield it...
            (
                r#"model="http://127.0.0.1:18080 123-45-6789""#,
                r#"model="http://127.0.0.1:18080 [SSN]""#,
            ),
            // ... nor does an identifier that merely contains configured text stay readable.
            ("url=http://127.0.0.1:180800 x", "url=[URL] x"),
            (
                "url=http://10.0.0.5:11434/v1.evil.example.org/x",
                "url=[URL]",
            ),
            // The same address, not configured: redacted.
            ("addr=127.0.0.2:18080", "addr=[IP_ADDRESS]:18080"),
        ] {
            assert_eq!(c.redact(line), want, "{line}");
        }
        // Nothing configured: everything is redacted, as before.
        assert_eq!(
            Configured::new().redact("url=http://127.0.0.1:18080"),
            "url=[URL]"
        );
    }

    /// The terminal's colour sequences are not text: `ESC[3mmodel` is no device serial. A line
    /// without PHI keeps its colours; one with PHI is redacted and written plain.
    #[test]
    fn colour_sequences_are_not_mistaken_for_identifiers() {
        let c = configured(&[]);
        let coloured = "\x1b[2m2025-06-01T12:00:00.123456Z\x1b[0m \x1b[32m INFO\x1b[0m \
                        \x1b[2mwardgate\x1b[0m\x1b[2m:\x1b[0m fetching the default model \
                        \x1b[3mmodel\x1b[0m\x1b[2m=\x1b[0m\"smollm2:135m\"";
        assert_eq!(c.redact(coloured), coloured);
        assert_eq!(
            c.redact("\x1b[3mdetail\x1b[0m\x1b[2m=\x1b[0mSSN 123-45-6789"),
            "detail=SSN [SSN]"
        );
    }

    #[test]
    fn a_writer_keeping_configured_text_writes_it_and_redacts_the_rest() {
        let sink = Sink::default();
        let c = Arc::new(configured(&["http://127.0.0.1:18080"]));
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(RedactingMakeWriter::keeping(sink.clone(), c.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(url = "http://127.0.0.1:18080", "listening");
            // Added later, as the server adds its bound address.
            c.add("http://127.0.0.1:43210");
            tracing::info!(
                url = "http://127.0.0.1:43210",
                peer = "10.1.2.3",
                "listening"
            );
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains(r#"url="http://127.0.0.1:18080""#), "{out}");
        assert!(out.contains(r#"url="http://127.0.0.1:43210""#), "{out}");
        assert!(out.contains(r#"peer="[IP_ADDRESS]""#), "{out}");
    }
}
