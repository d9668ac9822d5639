//! `[server]` and `[server.tls]`: connection bounds and TLS, validated.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration, duration, duration_or_off, words};

/// Bounds on connections and on the HTTP protocol itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerLimits {
    /// From accept to the end of the first request head, and from the end of a response to
    /// the end of the next head.
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Most connections from one client address (IPv4 address or IPv6 /64) at once; peers in
    /// `trusted_proxies` are not counted.
    pub max_connections_per_ip: usize,
    pub http2_max_streams: u32,
    /// Proxies whose `X-Forwarded-For` is believed; empty: the peer address is the source.
    pub trusted_proxies: Vec<IpNet>,
    /// `Strict-Transport-Security` max-age sent when TLS is on; zero: not sent.
    pub hsts_max_age: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
            trusted_proxies: Vec::new(),
            hsts_max_age: DEFAULT_HSTS_MAX_AGE,
        }
    }
}

/// `[server]`, validated: the listener, its timeouts, its bounds and its TLS.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub request_timeout: Duration,
    pub first_token_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Connection and protocol bounds.
    pub limits: ServerLimits,
    /// `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
}

/// Whether clients must present a certificate signed by `client_ca_file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum ClientAuth {
    /// A certificate is verified when presented; clients without one authenticate otherwise.
    Optional,
    /// The handshake fails without a valid client certificate.
    Required,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA that signs client certificates; `None`: no client certificates asked for.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub reload_interval: Duration,
}

words!(
    ClientAuth,
    "`{}` is not `optional` or `required`",
    Optional = "optional",
    Required = "required",
);

// The defaults of `[server]`, one per field; the doc comments of [`RawServer`] and [`RawTls`]
// quote them.

/// Default of `server.listen`: loopback only.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Default of `server.request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `server.first_token_timeout`, or `server.request_timeout` where that is shorter.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Default of `server.shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default of `server.header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `server.body_read_timeout`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `server.max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default of `server.max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default of `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of `server.max_connections_per_ip`. A hospital's NAT puts hundreds of users behind
/// one address; each browser or client library holds a few connections.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default of `server.http2_max_streams`.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 100;
/// Default of `server.hsts_max_age`: a year.
pub const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 86_400);
/// Default of `server.tls.client_auth`.
pub const DEFAULT_CLIENT_AUTH: ClientAuth = ClientAuth::Optional;
/// Default of `server.tls.reload_interval`.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on. Default `127.0.0.1:8080`.
    #[serde(default, deserialize_with = "socket_addr")]
    pub listen: Option<SocketAddr>,
    /// Hard limit on a whole request, streaming included. Default `30s`.
    pub request_timeout: Option<HumanDuration>,
    /// Limit until a backend produces its first token; past it the next link is tried.
    /// Default `15s`, or `request_timeout` where that is shorter.
    pub first_token_timeout: Option<HumanDuration>,
    /// How long SIGTERM waits for in-flight streams to finish. Default `30s`.
    pub shutdown_grace: Option<HumanDuration>,
    /// A connection must deliver its whole request head within this: from accept (TLS
    /// handshake included) for the first, from the end of the last response for the next (so
    /// it is also the keep-alive idle timeout). Default `10s`.
    pub header_read_timeout: Option<HumanDuration>,
    /// A client must send its whole request body within this. Default `30s`.
    pub body_read_timeout: Option<HumanDuration>,
    /// Largest request head in bytes (431 past it). Default 16384; at least 8192.
    pub max_header_bytes: Option<usize>,
    /// Most header fields in one request. Default 100.
    pub max_headers: Option<usize>,
    /// Most open connections; further ones wait to be accepted. Default 1024.
    pub max_connections: Option<usize>,
    /// Most open connections from one client address (an IPv4 address or an IPv6 /64); one
    /// more is closed at once. Peers in `trusted_proxies` are not counted. Default 256, from 1
    /// to 65536.
    pub max_connections_per_ip: Option<usize>,
    /// Most concurrent streams on one HTTP/2 connection. Default 100.
    pub http2_max_streams: Option<u32>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed for the source
    /// address (audit, lockout). Default none: the peer address is the source.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `Strict-Transport-Security` max-age when TLS is on; `0s` sends none. Default `365d`.
    pub hsts_max_age: Option<HumanDuration>,
    /// TLS for this listener; absent: plain HTTP (behind a TLS-terminating proxy, or local).
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that sign client certificates (mTLS); absent: none asked for.
    pub client_ca_file: Option<PathBuf>,
    /// `optional` (default; a client without a certificate authenticates otherwise) or
    /// `required` (the handshake fails without one).
    pub client_auth: Option<ClientAuth>,
    /// How often the certificate and key files are checked for a renewal. Default `30s`.
    pub reload_interval: Option<HumanDuration>,
}

/// `server.listen`, refused with the address's own text.
fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("`{text}` is not an address like 127.0.0.1:8080"))
    })
}

const MAX_CONNECTIONS_PER_IP: usize = 65_536;

/// `[server]`, validated.
pub(super) fn server(raw: &RawServer) -> Result<ServerSettings, ConfigError> {
    let request_timeout = duration(
        "server.request_timeout",
        raw.request_timeout.as_deref(),
        DEFAULT_REQUEST_TIMEOUT,
    )?;
    // Unset, the first-token limit is its default or the request limit, whichever is shorter;
    // set explicitly longer than the request limit, it is a mistake worth stopping for.
    let first_token_timeout = duration(
        "server.first_token_timeout",
        raw.first_token_timeout.as_deref(),
        DEFAULT_FIRST_TOKEN_TIMEOUT.min(request_timeout),
    )?;
    if first_token_timeout > request_timeout {
        return Err(ConfigError::new(
            "server.first_token_timeout",
            "must not be longer than server.request_timeout",
        ));
    }
    let shutdown_grace = duration(
        "server.shutdown_grace",
        raw.shutdown_grace.as_deref(),
        DEFAULT_SHUTDOWN_GRACE,
    )?;
    Ok(ServerSettings {
        listen: raw.listen.unwrap_or(DEFAULT_LISTEN),
        request_timeout,
        first_token_timeout,
        shutdown_grace,
        limits: server_limits(raw)?,
        tls: tls_settings(raw.tls.as_ref())?,
    })
}

fn server_limits(raw: &RawServer) -> Result<ServerLimits, ConfigError> {
    let d = ServerLimits::default();
    let at_least = |key: &str, v: Option<usize>, min: usize, default: usize| match v {
        Some(n) if n < min => Err(ConfigError::new(key, format!("must be at least {min}"))),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let mut trusted_proxies = Vec::with_capacity(raw.trusted_proxies.len());
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        let net = p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                ConfigError::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("`{p}` is not an address or CIDR range like 10.0.0.0/8"),
                )
            })?;
        trusted_proxies.push(net);
    }
    Ok(ServerLimits {
        header_read_timeout: duration(
            "server.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            d.header_read_timeout,
        )?,
        body_read_timeout: duration(
            "server.body_read_timeout",
            raw.body_read_timeout.as_deref(),
            d.body_read_timeout,
        )?,
        max_header_bytes: at_least(
            "server.max_header_bytes",
            raw.max_header_bytes,
            8192,
            d.max_header_bytes,
        )?,
        max_headers: at_least("server.max_headers", raw.max_headers, 16, d.max_headers)?,
        max_connections: at_least(
            "server.max_connections",
            raw.max_connections,
            1,
            d.max_connections,
        )?,
        max_connections_per_ip: match raw.max_connections_per_ip {
            Some(0) => {
                return Err(ConfigError::new(
                    "server.max_connections_per_ip",
                    "must be at least 1 (0 would refuse every connection); to leave one \
                     address uncapped, e.g. a load balancer, list it in server.trusted_proxies",
                ));
            }
            Some(n) if n > MAX_CONNECTIONS_PER_IP => {
                return Err(ConfigError::new(
                    "server.max_connections_per_ip",
                    format!(
                        "must be at most {MAX_CONNECTIONS_PER_IP} (one address cannot open \
                         more TCP connections to one port than it has ports)"
                    ),
                ));
            }
            Some(n) => n,
            None => d.max_connections_per_ip,
        },
        http2_max_streams: match raw.http2_max_streams {
            Some(0) => {
                return Err(ConfigError::new(
                    "server.http2_max_streams",
                    "must be greater than zero",
                ));
            }
            Some(n) => n,
            None => d.http2_max_streams,
        },
        trusted_proxies,
        hsts_max_age: duration_or_off(raw.hsts_max_age.as_deref(), d.hsts_max_age),
    })
}

fn tls_settings(raw: Option<&RawTls>) -> Result<Option<TlsSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let client_auth = raw.client_auth.unwrap_or(DEFAULT_CLIENT_AUTH);
    if raw.client_auth.is_some() && raw.client_ca_file.is_none() {
        return Err(ConfigError::new(
            "server.tls.client_auth",
            "needs server.tls.client_ca_file, the CA that signs client certificates",
        ));
    }
    let reload_interval = duration(
        "server.tls.reload_interval",
        raw.reload_interval.as_deref(),
        DEFAULT_TLS_RELOAD_INTERVAL,
    )?;
    if reload_interval < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "server.tls.reload_interval",
            "must be at least 1s",
        ));
    }
    Ok(Some(TlsSettings {
        cert_file: raw.cert_file.clone(),
        key_file: raw.key_file.clone(),
        client_ca_file: raw.client_ca_file.clone(),
        client_auth,
        reload_interval,
    }))
}
