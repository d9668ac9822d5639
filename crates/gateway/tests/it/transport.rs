//! The connection layer on real sockets: TLS (with a CA made here by rcgen), certificate hot
//! reload, HSTS, client certificates as principals, and the protocol bounds (header and body
//! read timeouts, header size, connection count, trusted proxies). The attack cases themselves
//! (20, 25, 27) are in `attack_cases.rs`.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for localhost and 127.0.0.1: (cert PEM, key PEM, cert DER).
    fn server(&self, cn: &str) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A client certificate with the given subject: (cert PEM, key PEM).
    fn client(&self, cn: &str, org: Option<&str>) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client trusting only `ca`, optionally presenting a client certificate.
fn client_config(ca: &Ca, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    }
}

/// Connects over TLS; returns the stream (or the handshake error).
async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut s = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate only after the handshake: a round trip
    // makes it show.
    s.flush().await?;
    Ok(s)
}

/// Sends one HTTP/1.1 request and reads the whole answer (the server closes after it).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    key: Option<&str>,
) -> std::io::Result<String> {
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{auth}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A TLS harness that verifies client certificates from `ca` (`client_auth` as given).
async fn mtls_harness(dir: &Path, ca: &Ca, client_auth: &str) -> Harness {
    let ca_file = write(dir, "clients.pem", &ca.pem());
    let extra = format!("client_ca_file = \"{ca_file}\"\nclient_auth = \"{client_auth}\"\n");
    tls_harness(dir, ca, &extra).await.0
}

async fn tls_harness(dir: &Path, ca: &Ca, extra: &str) -> (Harness, String, String) {
    let (cert, key, _) = ca.server("server-a");
    let cert_file = write(dir, "server.pem", &cert);
    let key_file = write(dir, "server.key", &key);
    let toml = format!(
        "[server.tls]\ncert_file = \"{cert_file}\"\nkey_file = \"{key_file}\"\nreload_interval = \"1s\"\n{extra}"
    );
    let h = Harness::single_with("openai", mock_cfg(), &toml).await;
    (h, cert_file, key_file)
}

#[tokio::test]
async fn tls_serves_with_hsts_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (h, _, _) = tls_harness(dir.path(), &ca, "").await;
    let addr = h.listen().await;

    let mut s = tls_connect(addr, client_config(&ca, None)).await.unwrap();
    let resp = exchange(&mut s, "/v1/models", Some(&h.key)).await.unwrap();
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{resp}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = exchange(&mut tcp, "/health", None)
        .await
        .unwrap_or_default();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that does not trust the CA cannot connect.
    let other = Ca::new("other CA");
    assert!(
        tls_connect(addr, client_config(&other, None))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn no_hsts_without_tls() {
    let h = Harness::single("openai").await;
    let addr = h.listen().await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let resp = exchange(&mut tcp, "/health", None).await.unwrap();
    assert_eq!(status_of(&resp), 200);
    assert!(
        !resp
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{resp}"
    );
}

/// The leaf certificate the server presents.
async fn served_cert(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let s = tls_connect(addr, client_config(ca, None)).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    // The reload task logs each refused pair: the test waits for that, not for a fixed time.
    let (logs, _guard) = crate::support::logs::capture_logs();
    let refusals = || logs.text().matches("TLS certificate reload failed").count();
    let (h, cert_file, key_file) = tls_harness(dir.path(), &ca, "").await;
    let addr = h.listen().await;
    let first = served_cert(addr, &ca).await;

    let (cert, key, der) = ca.server("server-b");
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    let served = poll_until(
        Duration::from_secs(10),
        || served_cert(addr, &ca),
        |served| *served == der,
    )
    .await;
    assert!(served == der, "the renewed certificate was never served");
    assert_ne!(first, der);

    // A half-written renewal (a key that does not match) is refused; the last good pair stays.
    let before = refusals();
    let (_, other_key, _) = ca.server("server-c");
    // Renamed into place, so no reload reads the file half-written: the one refusal waited for
    // below is of this pair.
    let part = format!("{key_file}.part");
    std::fs::write(&part, other_key).unwrap();
    std::fs::rename(&part, &key_file).unwrap();
    eventually(
        Duration::from_secs(10),
        "the reload task tries the broken pair",
        || refusals() > before,
    )
    .await;
    assert_eq!(served_cert(addr, &ca).await, der);
}

#[tokio::test]
async fn a_client_certificate_is_a_principal_in_its_organization() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let h = mtls_harness(dir.path(), &ca, "optional").await;
    let h = h
        .audited(Arc::new(
            wardgate_store::SqliteStore::open_in_memory().await.unwrap(),
        ))
        .await;
    let addr = h.listen().await;

    let (cert, key) = ca.client("billing-svc", Some("acme"));
    let mut s = tls_connect(addr, client_config(&ca, Some((&cert, &key))))
        .await
        .unwrap();
    let resp = exchange(&mut s, "/v1/models", None).await.unwrap();
    assert_eq!(status_of(&resp), 200, "{resp}");

    // No certificate and no key: nobody.
    let mut s = tls_connect(addr, client_config(&ca, None)).await.unwrap();
    assert_eq!(
        status_of(&exchange(&mut s, "/v1/models", None).await.unwrap()),
        401
    );
    // A certificate without an organization names no tenant.
    let (cert, key) = ca.client("stray", None);
    let mut s = tls_connect(addr, client_config(&ca, Some((&cert, &key))))
        .await
        .unwrap();
    assert_eq!(
        status_of(&exchange(&mut s, "/v1/models", None).await.unwrap()),
        401
    );
    // A certificate from another CA does not even connect.
    let other = Ca::new("other CA");
    let (cert, key) = other.client("mallory", Some("acme"));
    let refused = match tls_connect(addr, client_config(&ca, Some((&cert, &key)))).await {
        Err(_) => true,
        Ok(mut s) => exchange(&mut s, "/v1/models", None).await.is_err(),
    };
    assert!(refused, "a certificate from an unknown CA must be refused");

    let events = h.audit_events().await;
    let served = events
        .iter()
        .find(|e| e.actor_id == "cert:billing-svc")
        .expect("the certificate's request is audited under its subject");
    assert_eq!(served.tenant.as_deref(), Some("acme"));
    assert_eq!(served.auth_method, Some(wardgate_audit::AuthMethod::Mtls));
    assert_eq!(served.key_id, None, "a certificate is not a wardgate key");
}

#[tokio::test]
async fn required_client_certificates_refuse_the_handshake_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let h = mtls_harness(dir.path(), &ca, "required").await;
    let addr = h.listen().await;
    let refused = match tls_connect(addr, client_config(&ca, None)).await {
        Err(_) => true,
        Ok(mut s) => exchange(&mut s, "/health", None).await.is_err(),
    };
    assert!(refused);
    let (cert, key) = ca.client("billing-svc", Some("acme"));
    let mut s = tls_connect(addr, client_config(&ca, Some((&cert, &key))))
        .await
        .unwrap();
    assert_eq!(
        status_of(&exchange(&mut s, "/health", None).await.unwrap()),
        200
    );
}

/// Reads until the server closes the connection or `limit` passes; the time it took, or
/// `None` if it stayed open.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_at_the_header_timeout() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\nheader_read_timeout = \"1s\"\n",
    )
    .await;
    let addr = h.listen().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // One header line every 300 ms, never finishing the head.
    let trickle = async {
        for i in 0..10 {
            // The trickle's pace (the attack itself), not a wait for anything.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(format!("x-pad-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let started = Instant::now();
    trickle.await;
    // The connection was closed by the server: later writes fail or reads see the end.
    let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
    let elapsed = started.elapsed();
    let mut buf = [0u8; 64];
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    );
    assert!(
        closed,
        "the trickling connection is still open after {elapsed:?}"
    );
    // Others are served throughout.
    let resp = exchange(&mut probe, "/health", None).await.unwrap();
    assert_eq!(status_of(&resp), 200);
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_header_timeout() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\nheader_read_timeout = \"1s\"\n",
    )
    .await;
    let addr = h.listen().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTT").await.unwrap();
    let took = closed_within(&mut s, Duration::from_secs(5)).await;
    let took = took.expect("a half-sent head must not hold the connection");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn a_trickled_body_gets_408_at_the_body_timeout() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\nbody_read_timeout = \"1s\"\n",
    )
    .await;
    let addr = h.listen().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"model\":",
        h.key
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Keep trickling a byte at a time; the server answers anyway once the timeout passes.
    loop {
        tokio::select! {
            n = s.read(&mut buf) => {
                let n = n.unwrap_or(0);
                if n == 0 { break; }
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}}") { break; }
            }
            // The trickle's pace (the attack itself), not a wait for anything.
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                let _ = s.write_all(b" ").await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no answer");
    }
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), 408, "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let h = Harness::single("openai").await;
    let addr = h.listen().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(20_000);
    let req = format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 431);
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let h = Harness::single_with("openai", mock_cfg(), "[server]\nmax_connections = 2\n").await;
    let addr = h.listen().await;
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Make sure both are accepted (served) before the third arrives.
    a.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = a.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
    assert!(
        waiting.is_err(),
        "a third connection was served past the limit"
    );
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// The source address the audit log recorded for the last request.
async fn audited_source(h: &Harness) -> Option<std::net::IpAddr> {
    h.audit_events()
        .await
        .iter()
        .rev()
        .find(|e| e.route.as_deref() == Some("/v1/models"))
        .and_then(|e| e.source_ip)
}

async fn models_with_xff(addr: SocketAddr, key: &str, xff: &str) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nx-forwarded-for: {xff}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 200);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let store = Arc::new(wardgate_store::SqliteStore::open_in_memory().await.unwrap());
    let h = Harness::single("openai").await.audited(store).await;
    let addr = h.listen().await;
    models_with_xff(addr, &h.key, "203.0.113.9").await;
    assert_eq!(audited_source(&h).await, Some("127.0.0.1".parse().unwrap()));
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let store = Arc::new(wardgate_store::SqliteStore::open_in_memory().await.unwrap());
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .await
    .audited(store)
    .await;
    let addr = h.listen().await;
    // The client forged the first entry; the proxy appended the address it saw.
    models_with_xff(addr, &h.key, "10.9.9.9, 203.0.113.9").await;
    assert_eq!(
        audited_source(&h).await,
        Some("203.0.113.9".parse().unwrap())
    );
}

#[test]
fn server_settings_are_validated() {
    let bad = [
        (
            "[server]\nmax_header_bytes = 100\n",
            "server.max_header_bytes",
        ),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        (
            "[server]\nheader_read_timeout = \"0s\"\n",
            "server.header_read_timeout",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "server.trusted_proxies[0]",
        ),
        (
            "[server.tls]\ncert_file = \"a\"\nkey_file = \"b\"\nclient_auth = \"required\"\n",
            "server.tls.client_auth",
        ),
        (
            "[auth]\nclient_cert_roles = [\"break_glass\"]\n",
            "auth.client_cert_roles",
        ),
        (
            "[auth]\nclient_cert_tenant = \"Not A Tenant\"\n",
            "auth.client_cert_tenant",
        ),
    ];
    for (toml, key) in bad {
        let raw = wardgate_gateway::config::parse_toml(toml).unwrap();
        let e = wardgate_gateway::Config::from_raw(raw, &|_| None).unwrap_err();
        assert_eq!(e.key, key, "{toml}: {e}");
    }
    let only_cert = |k: &str| (k == "WARDGATE_TLS_CERT").then(|| "cert.pem".to_owned());
    let e = wardgate_gateway::Config::from_raw(Default::default(), &only_cert).unwrap_err();
    assert_eq!(e.key, "WARDGATE_TLS_CERT");
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, _, _) = ca.server("a");
    let (_, key, _) = ca.server("b");
    let settings = wardgate_gateway::serve::tls::TlsSettings {
        cert_file: write(dir.path(), "c.pem", &cert).into(),
        key_file: write(dir.path(), "k.pem", &key).into(),
        client_ca_file: None,
        client_auth: wardgate_gateway::serve::tls::ClientAuth::Optional,
        reload_interval: Duration::from_secs(30),
    };
    let e = wardgate_gateway::serve::tls::Tls::load(&settings).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[tokio::test]
async fn the_private_hop_runs_over_tls_trusting_only_its_ca() {
    use wardgate_backends::{Backend as _, BackendKind, HttpBackend, HttpBackendConfig};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("private hop CA");
    // `wardgate llm`'s router, served with its own certificate.
    let (h, _, _) = tls_harness(dir.path(), &ca, "").await;
    let secret = b"0123456789abcdef0123456789abcdef-hop";
    let service = wardgate_gateway::app::LlmService::build(
        (*h.state.config).clone(),
        wardgate_gateway::app::Stores::in_memory().await.unwrap(),
        vec![wardgate_api::signing::SigningKey::new(secret).unwrap()],
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        service.run(listener, std::future::pending()).await.unwrap();
    });
    let backend = |ca_pem: Option<Vec<u8>>| {
        let mut c = HttpBackendConfig::new(
            "hop",
            BackendKind::Ollama,
            format!("https://localhost:{port}"),
        );
        c.signer = Some(wardgate_api::signing::SigningKey::new(secret).unwrap());
        c.ca_pem = ca_pem;
        HttpBackend::new(c).unwrap()
    };
    // The gateway's side, trusting the private CA: signed and encrypted, served.
    backend(Some(ca.pem().into_bytes()))
        .health()
        .await
        .expect("the hop over TLS with the private CA");
    // Without it (the system's roots), the certificate is not trusted.
    assert!(backend(None).health().await.is_err());
    // Trusting another CA only: refused too.
    let other = Ca::new("other CA");
    assert!(
        backend(Some(other.pem().into_bytes()))
            .health()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn http2_streams_per_connection_are_capped() {
    // One stream at a time on a connection: three slow requests multiplexed on it cannot
    // overlap, so together they take at least three times one.
    let slow = mock_upstream::MockConfig {
        first_token_delay: Duration::from_millis(300),
        ..mock_cfg()
    };
    let h = Harness::single_with("openai", slow, "[server]\nhttp2_max_streams = 1\n").await;
    let addr = h.listen().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://{addr}/v1/chat/completions");
    let send = || {
        client
            .post(&url)
            .bearer_auth(&h.key)
            .json(&chat_body("tiny", "hello"))
            .send()
    };
    // The connection is up (and its settings known) before the three go out together.
    let first = send().await.unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(first.status(), 200);
    let started = Instant::now();
    let answers = futures::future::join_all([send(), send(), send()]).await;
    let took = started.elapsed();
    for a in answers {
        assert_eq!(a.unwrap().status(), 200);
    }
    assert!(
        took >= Duration::from_millis(900),
        "three 300 ms requests finished in {took:?}: they overlapped past the stream cap"
    );
}

/// Issue 15, item 1: the header timeout runs from accept over TLS too. A client that never
/// starts the handshake, one that stops inside it, and one that completes it and then sends
/// nothing are all closed at the timeout (before, the last stayed open for good: hyper's timer
/// starts only at the first byte of a request), while a real client is served.
#[tokio::test]
async fn tls_connections_without_a_request_are_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key, _) = ca.server("server-a");
    let cert_file = write(dir.path(), "server.pem", &cert);
    let key_file = write(dir.path(), "server.key", &key);
    let toml = format!(
        "[server]\nheader_read_timeout = \"1s\"\n\n[server.tls]\ncert_file = \"{cert_file}\"\nkey_file = \"{key_file}\"\n"
    );
    let h = Harness::single_with("openai", mock_cfg(), &toml).await;
    let addr = h.listen().await;
    let limit = Duration::from_secs(5);

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The first bytes of a TLS record header, and nothing more.
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut idle = tls_connect(addr, client_config(&ca, None)).await.unwrap();
    let idle_closed = async {
        let started = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout_at((started + limit).into(), idle.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    };
    let (a, b, c) = tokio::join!(
        closed_within(&mut silent, limit),
        closed_within(&mut partial, limit),
        idle_closed
    );
    for (what, took) in [
        ("silent", a),
        ("partial handshake", b),
        ("idle after handshake", c),
    ] {
        let took = took.unwrap_or_else(|| panic!("{what}: the connection stayed open"));
        assert!(took >= Duration::from_millis(500), "{what}: {took:?}");
    }
    // A client that sends its request is served.
    let mut s = tls_connect(addr, client_config(&ca, None)).await.unwrap();
    let resp = exchange(&mut s, "/health", None).await.unwrap();
    assert_eq!(status_of(&resp), 200, "{resp}");
}
