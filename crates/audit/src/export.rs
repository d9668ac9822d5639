//! The export format: JSON Lines an auditor can verify offline with only the public key.
//!
//! ```text
//! {"format":"wardgate-audit-export","version":1,"checkpoints":K}
//! {"checkpoint":"<signed checkpoint note>"}                      K lines, by size
//! {"seq":0,"leaf_hash":"<hex>","event":{...}}                    one line per entry, from 0
//! ```
//!
//! Checkpoints come before the entries so a verifier can check each root as it streams past
//! the checkpoint's size, in one pass and constant memory. Entry lines use the same field
//! names as the canonical leaf, but a verifier re-encodes the event rather than trusting the
//! line's bytes, so reformatting the file does not break verification while changing any value
//! does. `wardgate audit query` prints entries in the same line form.

use std::io::{BufRead, Read as _, Write};

use serde::{Deserialize, Serialize};

use crate::event::AuditEvent;
use crate::merkle::Hash;
use crate::store::{AuditEntry, AuditStore, AuditStoreError, MAX_READ};

/// The `format` value of the header line.
pub const FORMAT: &str = "wardgate-audit-export";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The longest line read from an export.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    checkpoints: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    checkpoint: String,
}

#[derive(Serialize)]
struct EntryLineRef<'a> {
    seq: u64,
    leaf_hash: &'a Hash,
    event: &'a AuditEvent,
}

/// One entry line as read back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLine {
    /// The position the line claims.
    pub seq: u64,
    /// The leaf hash the line claims.
    pub leaf_hash: Hash,
    /// The event.
    pub event: AuditEvent,
}

/// Why an export could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] AuditStoreError),
    /// Writing or reading the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is not an export of this version; the message names the line.
    #[error("line {line}: {reason}")]
    Format {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entry lines.
    pub entries: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
}

/// The entry's line (without the newline).
pub fn entry_line(entry: &AuditEntry) -> String {
    let mut out = Vec::with_capacity(600);
    write_entry(&mut out, entry);
    String::from_utf8(out).unwrap_or_default()
}

/// One queued event of a shared log as a JSON line: `{"pending":true,"queue_id":N,"event":{..}}`.
/// It has no sequence number or leaf hash yet; it is not part of an export.
pub fn pending_line(pending: &crate::shared::PendingEvent) -> String {
    serde_json::json!({
        "pending": true,
        "queue_id": pending.id,
        "event": pending.event,
    })
    .to_string()
}

fn write_entry(out: &mut Vec<u8>, entry: &AuditEntry) {
    // Serializing to a Vec cannot fail for these types (see `event::encode_leaf_into`).
    let _ = serde_json::to_writer(
        &mut *out,
        &EntryLineRef {
            seq: entry.seq,
            leaf_hash: &entry.leaf_hash,
            event: &entry.event,
        },
    );
}

fn json_line<T: Serialize>(out: &mut impl Write, value: &T) -> Result<(), ExportError> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes an export from parts already in memory (tests, benchmarks, tools).
pub fn write_parts(
    mut out: impl Write,
    checkpoint_notes: &[String],
    entries: impl IntoIterator<Item = impl std::borrow::Borrow<AuditEntry>>,
) -> Result<ExportSummary, ExportError> {
    json_line(
        &mut out,
        &Header {
            format: FORMAT.into(),
            version: VERSION,
            checkpoints: checkpoint_notes.len() as u64,
        },
    )?;
    for note in checkpoint_notes {
        json_line(
            &mut out,
            &CheckpointLine {
                checkpoint: note.clone(),
            },
        )?;
    }
    let mut count = 0;
    let mut line = Vec::with_capacity(1024);
    for entry in entries {
        line.clear();
        write_entry(&mut line, entry.borrow());
        line.push(b'\n');
        out.write_all(&line)?;
        count += 1;
    }
    out.flush()?;
    Ok(ExportSummary {
        entries: count,
        checkpoints: checkpoint_notes.len() as u64,
    })
}

/// Writes the whole log in `store` to `out`: the checkpoints, then every entry up to the size
/// read after them (so every exported checkpoint is covered by exported entries).
pub async fn write_export(
    store: &dyn AuditStore,
    mut out: impl Write,
) -> Result<ExportSummary, ExportError> {
    let mut notes = Vec::new();
    let mut from = 0;
    loop {
        let page = store.checkpoints(from, MAX_READ).await?;
        let Some(last) = page.last() else { break };
        from = last.size + 1;
        notes.extend(page.into_iter().map(|c| c.note));
    }
    let size = store.size().await?;
    json_line(
        &mut out,
        &Header {
            format: FORMAT.into(),
            version: VERSION,
            checkpoints: notes.len() as u64,
        },
    )?;
    for note in &notes {
        json_line(
            &mut out,
            &CheckpointLine {
                checkpoint: note.clone(),
            },
        )?;
    }
    let mut next = 0;
    let mut line = Vec::with_capacity(1024);
    while next < size {
        let page = store.read_range(next, MAX_READ).await?;
        if page.is_empty() {
            break;
        }
        for entry in page.iter().take((size - next) as usize) {
            line.clear();
            write_entry(&mut line, entry);
            line.push(b'\n');
            out.write_all(&line)?;
        }
        next += page.len() as u64;
    }
    out.flush()?;
    Ok(ExportSummary {
        entries: next.min(size),
        checkpoints: notes.len() as u64,
    })
}

/// Reads an export line by line, bounded.
pub struct ExportReader<R> {
    reader: R,
    line: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> ExportReader<R> {
    /// Reads the header and the checkpoint lines; entries follow through [`Self::next_entry`].
    pub fn open(reader: R) -> Result<(Self, Vec<String>), ExportError> {
        let mut this = Self {
            reader,
            line: Vec::with_capacity(1024),
            line_no: 0,
        };
        if !this.read_line()? {
            return Err(this.format_error("empty file; expected the export header"));
        }
        let header: Header = serde_json::from_slice(&this.line)
            .map_err(|e| this.format_error(&format!("not an export header: {e}")))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(this.format_error(&format!("not a {FORMAT} version {VERSION} file")));
        }
        let mut notes = Vec::new();
        for _ in 0..header.checkpoints {
            if !this.read_line()? {
                return Err(this.format_error("file ends inside the checkpoints"));
            }
            let line: CheckpointLine = serde_json::from_slice(&this.line)
                .map_err(|e| this.format_error(&format!("not a checkpoint line: {e}")))?;
            notes.push(line.checkpoint);
        }
        Ok((this, notes))
    }

    /// The next entry line: `None` at the end, `Some(Err(reason))` for a line that is not an
    /// entry (the caller knows which position it was meant to be).
    pub fn next_entry(&mut self) -> Result<Option<Result<EntryLine, String>>, ExportError> {
        if !self.read_line()? {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_slice(&self.line).map_err(|e| e.to_string()),
        ))
    }

    /// Reads up to `max` further lines (entry lines, unparsed) into `buf`, recording where each
    /// one lies in `spans`; both are cleared first. Returns how many were read (0 at the end).
    pub fn read_raw_lines(
        &mut self,
        max: usize,
        buf: &mut Vec<u8>,
        spans: &mut Vec<std::ops::Range<usize>>,
    ) -> Result<usize, ExportError> {
        buf.clear();
        spans.clear();
        while spans.len() < max && self.read_line()? {
            let start = buf.len();
            buf.extend_from_slice(&self.line);
            spans.push(start..buf.len());
        }
        Ok(spans.len())
    }

    fn format_error(&self, reason: &str) -> ExportError {
        ExportError::Format {
            line: self.line_no,
            reason: reason.to_owned(),
        }
    }

    /// Reads the next line into `self.line` without its newline; `false` at the end.
    fn read_line(&mut self) -> Result<bool, ExportError> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        } else if n > MAX_LINE {
            return Err(self.format_error("line too long"));
        }
        Ok(true)
    }
}
