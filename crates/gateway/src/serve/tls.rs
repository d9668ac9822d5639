//! TLS for the public listener and for `wardgate llm`: rustls with TLS 1.3 and 1.2 only and
//! rustls's default cipher suites (all AEAD with forward secrecy; no CBC, no RSA key exchange),
//! certificates reloaded from disk while serving, and optional client certificates (mTLS).
//!
//! Hot reload: the certificate and key files are re-read every `reload_interval`; when their
//! bytes changed and the new pair loads (the key matches the certificate), new handshakes get
//! it. A pair that does not load is logged and the old one kept, so a half-written renewal
//! never takes the service down.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

pub use crate::config::server::{ClientAuth, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The verified identity in a client certificate, added to each request on that connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject as an RFC 4514 string (`CN=billing-svc,O=acme`).
    pub subject: String,
    pub common_name: Option<String>,
    pub organization: Option<String>,
}

impl ClientCert {
    /// Reads the subject of a DER certificate (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
            it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
        };
        Some(ClientCert {
            subject: subject.to_string(),
            common_name: first(&mut subject.iter_common_name()),
            organization: first(&mut subject.iter_organization()),
        })
    }
}

/// The server certificate, swapped in place on reload.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
    /// SHA-256 of the certificate and key files as last loaded.
    loaded: RwLock<[u8; 32]>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A loaded TLS configuration: the acceptor for new connections and the reloading certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// Loads a certificate chain and its private key, refusing a key that does not match.
fn certified_key(
    provider: &CryptoProvider,
    settings: &TlsSettings,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&settings.cert_file, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(&settings.cert_file, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| file_error(&settings.key_file, format!("not a PEM private key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(&settings.key_file, e))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        file_error(
            &settings.key_file,
            format!("does not match the certificate in the cert file: {e}"),
        )
    })?;
    Ok(ck)
}

impl Tls {
    /// Loads the certificate, key and (when set) client CA, and builds the server config.
    pub fn load(settings: &TlsSettings) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert_pem = read(&settings.cert_file)?;
        let key_pem = read(&settings.key_file)?;
        let ck = certified_key(&provider, settings, &cert_pem, &key_pem)?;
        let cert = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(ck)),
            loaded: RwLock::new(digest(&cert_pem, &key_pem)),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &settings.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let pem = read(ca)?;
                for c in CertificateDer::pem_slice_iter(&pem) {
                    let c = c.map_err(|e| file_error(ca, format!("not a PEM certificate: {e}")))?;
                    roots.add(c).map_err(|e| file_error(ca, e))?;
                }
                if roots.is_empty() {
                    return Err(file_error(ca, "holds no certificate"));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match settings.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| file_error(ca, format!("unusable client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            settings: settings.clone(),
            provider,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The serving certificate's `notAfter` as Unix time (the one now served, reloads
    /// included); `None` if it cannot be read as X.509 (rustls took it, so it is at least DER).
    pub fn not_after(&self) -> Option<i64> {
        let current = self
            .cert
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let leaf = current.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// Re-reads the certificate and key; `Ok(true)` when a changed pair was loaded.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.settings.cert_file)?;
        let key_pem = read(&self.settings.key_file)?;
        let d = digest(&cert_pem, &key_pem);
        if *self.cert.loaded.read().unwrap_or_else(|e| e.into_inner()) == d {
            return Ok(false);
        }
        let ck = certified_key(&self.provider, &self.settings, &cert_pem, &key_pem)?;
        *self.cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        *self.cert.loaded.write().unwrap_or_else(|e| e.into_inner()) = d;
        Ok(true)
    }

    /// Checks the files every `reload_interval` for as long as the task runs.
    pub fn spawn_reload(&self) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(tls.settings.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let tls = tls.clone();
                let result = tokio::task::spawn_blocking(move || tls.reload()).await;
                match result {
                    Ok(Ok(true)) => tracing::info!("TLS certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "TLS certificate reload failed; still serving the previous certificate"
                    ),
                    Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
                }
            }
        })
    }
}
