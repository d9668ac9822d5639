//! The model store: a directory (like `OLLAMA_MODELS`) of GGUF blobs named by their SHA-256,
//! and a manifest mapping `name:tag` to a blob with the metadata `/api/tags` and `/api/show`
//! report. Writes go to a temporary file and are renamed into place, so a crash never leaves a
//! half-written manifest or a blob whose name lies about its content.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::gguf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid model name `{0}`: use lowercase letters, digits, `.`, `_` and `-`, with an optional `:tag`"
    )]
    BadName(String),
    #[error("model `{0}` not found")]
    NotFound(String),
    #[error("`{path}` is not a usable GGUF file: {reason}")]
    BadFile { path: String, reason: String },
    #[error("checksum mismatch: expected {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("download failed: {0}")]
    Download(String),
    #[error("model store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the manifest is corrupt: {0}")]
    Manifest(String),
}

/// What the store knows of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Blob file name inside `blobs/`.
    pub file: String,
    /// SHA-256 of the file, hex.
    pub digest: String,
    pub size: u64,
    pub family: String,
    pub parameter_size: String,
    pub quantization_level: String,
    pub context_length: Option<u64>,
    pub has_chat_template: bool,
    /// RFC 3339.
    pub modified_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    models: BTreeMap<String, ModelEntry>,
}

/// Normalises and validates a model name: `name` becomes `name:latest`. Names are used as map
/// keys and in messages, never as paths, but are still held to a strict alphabet so no name can
/// smuggle `/`, `..` or control characters anywhere.
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    let bad = || StoreError::BadName(name.chars().take(80).collect());
    let (base, tag) = name.split_once(':').unwrap_or((name, "latest"));
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && !p.contains("..")
    };
    if !part_ok(base) || !part_ok(tag) {
        return Err(bad());
    }
    Ok(format!("{base}:{tag}"))
}

#[derive(Clone, Debug)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// Opens (creating if needed) a store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ModelStore, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("blobs"))?;
        Ok(ModelStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    fn read(&self) -> Result<Manifest, StoreError> {
        match fs::read(self.manifest_path()) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Manifest(e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, m: &Manifest) -> Result<(), StoreError> {
        let tmp = self.dir.join(".manifest.json.tmp");
        let bytes =
            serde_json::to_vec_pretty(m).map_err(|e| StoreError::Manifest(e.to_string()))?;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, self.manifest_path())?;
        Ok(())
    }

    pub fn list(&self) -> Result<BTreeMap<String, ModelEntry>, StoreError> {
        Ok(self.read()?.models)
    }

    pub fn get(&self, name: &str) -> Result<ModelEntry, StoreError> {
        let name = normalize_name(name)?;
        self.read()?
            .models
            .remove(&name)
            .ok_or(StoreError::NotFound(name))
    }

    /// The path of a model's GGUF file.
    pub fn path_of(&self, entry: &ModelEntry) -> PathBuf {
        self.dir.join("blobs").join(&entry.file)
    }

    /// Copies a GGUF file into the store under `name`.
    pub fn import(&self, file: &Path, name: &str) -> Result<(String, ModelEntry), StoreError> {
        let name = normalize_name(name)?;
        let header = read_header(file)?;
        let tmp = self
            .dir
            .join("blobs")
            .join(format!(".import-{}.tmp", std::process::id()));
        let digest = {
            let mut src = fs::File::open(file)?;
            let mut dst = fs::File::create(&tmp)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                dst.write_all(&buf[..n])?;
            }
            dst.sync_all()?;
            hex::encode(hasher.finalize())
        };
        self.register(&name, &tmp, &digest, &header)
    }

    /// Moves a verified file (already named by the caller) into `blobs/` and records it.
    pub(crate) fn register(
        &self,
        name: &str,
        tmp: &Path,
        digest: &str,
        header: &gguf::Header,
    ) -> Result<(String, ModelEntry), StoreError> {
        let file = format!("sha256-{digest}.gguf");
        let dest = self.dir.join("blobs").join(&file);
        fs::rename(tmp, &dest)?;
        let size = fs::metadata(&dest)?.len();
        let entry = ModelEntry {
            file,
            digest: digest.to_owned(),
            size,
            family: header.architecture().unwrap_or("unknown").to_owned(),
            parameter_size: header.parameter_size(),
            quantization_level: header.quantization(),
            context_length: header.context_length(),
            has_chat_template: header.has_chat_template(),
            modified_at: wardgate_api::rfc3339(time::OffsetDateTime::now_utc()),
        };
        let mut m = self.read()?;
        m.models.insert(name.to_owned(), entry.clone());
        self.write(&m)?;
        Ok((name.to_owned(), entry))
    }

    /// Removes a model; its blob goes too unless another name points at it.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        let mut m = self.read()?;
        let entry = m.models.remove(&name).ok_or(StoreError::NotFound(name))?;
        self.write(&m)?;
        if !m.models.values().any(|e| e.file == entry.file) {
            let _ = fs::remove_file(self.path_of(&entry));
        }
        Ok(())
    }
}

/// Reads and checks a GGUF header.
pub fn read_header(file: &Path) -> Result<gguf::Header, StoreError> {
    let f = fs::File::open(file).map_err(|e| StoreError::BadFile {
        path: file.display().to_string(),
        reason: e.to_string(),
    })?;
    gguf::read_header(std::io::BufReader::new(f)).map_err(|e| StoreError::BadFile {
        path: file.display().to_string(),
        reason: e.to_string(),
    })
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn tiny(dir: &Path) -> PathBuf {
        let p = dir.join("tiny.gguf");
        let f = fs::File::create(&p).unwrap();
        gguf::write_tiny_llama(std::io::BufWriter::new(f), &gguf::TinySpec::default()).unwrap();
        p
    }

    #[test]
    fn names_are_validated_against_traversal() {
        assert_eq!(normalize_name("smollm2").unwrap(), "smollm2:latest");
        assert_eq!(normalize_name("smollm2:135m").unwrap(), "smollm2:135m");
        for bad in [
            "",
            "../x",
            "a/b",
            "a:..",
            "A",
            "a:b:c",
            "a\0",
            "-a",
            ".hidden",
            "a:",
            "x".repeat(65).as_str(),
        ] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn import_list_get_and_remove() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let file = tiny(src.path());
        let (name, e) = store.import(&file, "tiny:test").unwrap();
        assert_eq!(name, "tiny:test");
        assert_eq!(e.digest, sha256_file(&file).unwrap());
        assert_eq!(e.family, "llama");
        assert_eq!(e.quantization_level, "F32");
        assert_eq!(e.context_length, Some(512));
        assert!(store.path_of(&e).exists());
        store.import(&file, "alias").unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        store.remove("tiny:test").unwrap();
        assert!(store.path_of(&e).exists(), "still used by `alias`");
        store.remove("alias").unwrap();
        assert!(!store.path_of(&e).exists());
        assert!(matches!(store.get("alias"), Err(StoreError::NotFound(_))));
        let junk = src.path().join("junk.gguf");
        fs::write(&junk, b"not a model").unwrap();
        assert!(matches!(
            store.import(&junk, "junk"),
            Err(StoreError::BadFile { .. })
        ));
        assert!(store.list().unwrap().is_empty());
    }
}
