//! `pull` against a local HTTP server: resume after a cut, checksum refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wardgate_engine::ModelStore;
use wardgate_engine::fetch::pull;
use wardgate_engine::gguf::{TinySpec, write_tiny_llama};
use wardgate_engine::store::StoreError;

/// Serves `body` at any path, honouring `Range: bytes=N-`; the first `cut_first` responses stop
/// halfway through (the connection is closed mid-body).
async fn serve(
    body: Vec<u8>,
    cut_first: usize,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, r) = (served.clone(), ranges.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let start = req
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("range: bytes=")
                        .map(|v| v.trim_end_matches('-').parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            r.lock().unwrap().push(format!("{start}"));
            let i = s.fetch_add(1, Ordering::SeqCst);
            let part = &body[start..];
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {start}-{}/{}\r\nconnection: close\r\n\r\n",
                    part.len(),
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    part.len()
                )
            };
            let _ = sock.write_all(head.as_bytes()).await;
            let send = if i < cut_first {
                &part[..part.len() / 2]
            } else {
                part
            };
            let _ = sock.write_all(send).await;
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}/tiny.gguf"), served, ranges)
}

fn tiny_bytes() -> (Vec<u8>, String) {
    let mut buf = Vec::new();
    write_tiny_llama(&mut buf, &TinySpec::default()).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&buf))
    };
    (buf, digest)
}

#[tokio::test]
async fn a_cut_download_resumes_and_is_verified() {
    let (bytes, digest) = tiny_bytes();
    let (url, served, ranges) = serve(bytes.clone(), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    assert!(
        pull(&store, &url, &digest, "tiny").await.is_err(),
        "the first transfer is cut"
    );
    let (name, entry) = pull(&store, &url, &digest, "tiny").await.unwrap();
    assert_eq!(name, "tiny:latest");
    assert_eq!(entry.digest, digest);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    let r = ranges.lock().unwrap().clone();
    assert_eq!(r[0], "0");
    assert_ne!(
        r[1], "0",
        "the second request resumed from where the first stopped"
    );
    assert_eq!(std::fs::read(store.path_of(&entry)).unwrap(), bytes);
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_and_nothing_is_kept() {
    let (bytes, _) = tiny_bytes();
    let (url, _, _) = serve(bytes, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    let wrong = "0".repeat(64);
    let err = pull(&store, &url, &wrong, "tiny").await.unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(pull(&store, &url, "xyz", "tiny").await.is_err());
    assert!(
        pull(&store, "file:///etc/passwd", &"0".repeat(64), "tiny")
            .await
            .is_err()
    );
    assert!(
        pull(&store, &url, &"0".repeat(64), "../evil")
            .await
            .is_err()
    );
}
