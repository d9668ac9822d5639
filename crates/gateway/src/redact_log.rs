//! PHI redaction of everything wardgate writes to its logs: a `tracing` writer that passes each
//! formatted event through the `phi` redactor before it reaches the output, and a panic hook
//! that does the same to panic messages (which can quote data). This sits on top of never
//! logging bodies at all: it catches what slips through a field or an error message.
//!
//! Invariant: no log output path bypasses this module once `init` has run.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use wardgate_phi::Detector;

/// Makes writers that redact one formatted event at a time.
#[derive(Clone, Debug)]
pub struct RedactingMakeWriter<M> {
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        RedactingMakeWriter { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buf: Vec::with_capacity(256),
            inner: self.inner.make_writer(),
        }
    }
}

/// Buffers one event (the formatter writes an event through one writer, then drops it) and
/// writes it redacted when dropped or flushed.
pub struct RedactingWriter<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> RedactingWriter<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let redacted = Detector::shared().redact(&text);
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
}
