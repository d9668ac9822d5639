//! Witnesses: copies of every signed checkpoint outside the database. This module is the
//! witness file; [`http`] is the client of an external C2SP witness. Either, or both, may be
//! configured.
//!
//! The witness file: every signed checkpoint, also appended to a file outside the database.
//! It stands in for an external witness (a WORM bucket, a syslog host, or the HTTP one): someone
//! who rewrites the database, even with the signing key, cannot rewrite checkpoints that have
//! already left it, and `verify` checks the log against them. Point it at storage the gateway's
//! database credentials cannot reach (another volume, a log shipper's spool).
//!
//! One JSON object per line, `{"note":"<signed checkpoint note>"}`. The file is opened with
//! `O_APPEND` (writes go to the end whatever else has the file open) and each record is fsync'd
//! before the checkpoint counts as witnessed. A crash mid-write can leave a torn last line;
//! readers skip lines that do not parse and report them, which loses nothing an attacker could
//! not also delete, since the signatures, not the file, carry the trust.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

pub mod http;

/// The longest witness line read; a checkpoint note is a few hundred bytes.
const MAX_LINE: u64 = 64 * 1024;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    note: String,
}

/// An open witness file.
#[derive(Debug)]
pub struct WitnessFile {
    file: File,
    path: PathBuf,
}

impl WitnessFile {
    /// Opens `path` for appending, creating it (owner-only on Unix) if missing.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        // If a crash tore the last record, start the next one on a fresh line so only the torn
        // record is lost.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut reader = File::open(path)?;
            reader.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            reader.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one signed checkpoint note and waits until it is on disk.
    pub fn append(&mut self, note: &str) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&Record {
            note: note.to_owned(),
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write call per record: with O_APPEND the kernel places it at the end as a unit.
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

/// What a witness file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessContents {
    /// The checkpoint notes, in file order.
    pub notes: Vec<String>,
    /// 1-based numbers of lines that were not records (torn or foreign), skipped.
    pub skipped_lines: Vec<usize>,
}

/// Reads every record of a witness file. Signatures are not checked here: the verifier does.
pub fn read(path: &Path) -> std::io::Result<WitnessContents> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut out = WitnessContents::default();
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        if !complete && n as u64 == MAX_LINE {
            // An over-long line: skip to its end.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            out.skipped_lines.push(number);
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(text) {
            Ok(record) => out.notes.push(record.note),
            Err(_) => out.skipped_lines.push(number),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn append_read_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness.jsonl");
        let mut w = WitnessFile::open(&path).unwrap();
        w.append("a\n1\nroot\n\n\u{2014} k sig\n").unwrap();
        w.append("b\n").unwrap();
        drop(w);
        // A torn record, then a reopen that appends more.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"note\":\"tor")
            .unwrap();
        let mut w = WitnessFile::open(&path).unwrap();
        w.append("c\n").unwrap();
        let read = read(&path).unwrap();
        assert_eq!(read.notes, ["a\n1\nroot\n\n\u{2014} k sig\n", "b\n", "c\n"]);
        assert_eq!(read.skipped_lines, [3]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
