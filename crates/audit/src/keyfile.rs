//! Key files: writing a new signing key (owner-only, never overwriting), loading it, and
//! loading a verifier key given either inline or as a file.
//!
//! The signing key file holds one line, the `PRIVATE+KEY+...` encoding of [`crate::note`].
//! The caller chooses where it lives (a file path or an environment variable in config);
//! this crate only takes the bytes.

use std::io::Write as _;
use std::path::Path;

use zeroize::Zeroizing;

use crate::note::{NoteError, SignerKey, VerifierKey};

/// The largest key file read.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key could not be written or loaded. Never quotes key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    // The cause is part of the message rather than a `source()`: error reporters that print
    // the chain would otherwise say it twice.
    /// Reading or writing the file failed (including: it already exists).
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The contents are not a key of the expected kind.
    #[error("{path}: {cause}")]
    Key {
        /// The file.
        path: String,
        /// The cause.
        cause: NoteError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |cause| KeyFileError::Io {
        path: path.display().to_string(),
        cause,
    }
}

/// Writes `key` to a new file at `path`, readable by its owner only, and syncs it. Refuses to
/// overwrite an existing file.
pub fn write_signer_key(path: &Path, key: &SignerKey) -> Result<(), KeyFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    let mut text = key.to_private_string();
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn read_small(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    if len > MAX_KEY_FILE {
        return Err(KeyFileError::Io {
            path: path.display().to_string(),
            cause: std::io::Error::other("too large for a key file"),
        });
    }
    Ok(Zeroizing::new(
        std::fs::read_to_string(path).map_err(io(path))?,
    ))
}

/// Loads a signing key file.
pub fn read_signer_key(path: &Path) -> Result<SignerKey, KeyFileError> {
    let text = read_small(path)?;
    SignerKey::parse(&text).map_err(|cause| KeyFileError::Key {
        path: path.display().to_string(),
        cause,
    })
}

/// A verifier key from `arg`: a vkey string (`name+id+key`), or the path of a file holding
/// one. A file holding a signing key also works (its public half is used), for operators
/// verifying on the gateway host itself.
pub fn load_verifier(arg: &str) -> Result<VerifierKey, KeyFileError> {
    if let Ok(key) = VerifierKey::parse(arg) {
        return Ok(key);
    }
    let path = Path::new(arg);
    let text = read_small(path)?;
    let key_error = |cause| KeyFileError::Key {
        path: path.display().to_string(),
        cause,
    };
    if text.trim_start().starts_with("PRIVATE+KEY+") {
        return SignerKey::parse(&text)
            .map(|k| k.verifier())
            .map_err(key_error);
    }
    VerifierKey::parse(&text).map_err(key_error)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn write_read_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let key = SignerKey::generate("example.com/audit").unwrap();
        write_signer_key(&path, &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwrites.
        assert!(write_signer_key(&path, &key).is_err());
        let read = read_signer_key(&path).unwrap();
        assert_eq!(read.verifier(), key.verifier());

        let vkey = key.verifier().to_string();
        assert_eq!(load_verifier(&vkey).unwrap(), key.verifier());
        let vpath = dir.path().join("audit.pub");
        std::fs::write(&vpath, format!("{vkey}\n")).unwrap();
        assert_eq!(
            load_verifier(vpath.to_str().unwrap()).unwrap(),
            key.verifier()
        );
        assert_eq!(
            load_verifier(path.to_str().unwrap()).unwrap(),
            key.verifier()
        );
        assert!(load_verifier("nonsense").is_err());
        std::fs::write(&vpath, "garbage\n").unwrap();
        let err = load_verifier(vpath.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit.pub"), "{err}");
    }
}
