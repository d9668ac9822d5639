//! `[server]` and `[server.tls]`: connection bounds and TLS, validated.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::words;

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
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 1024,
            // A hospital's NAT puts hundreds of users behind one address; each browser or
            // client library holds a few connections.
            max_connections_per_ip: 256,
            http2_max_streams: 100,
            trusted_proxies: Vec::new(),
            hsts_max_age: Duration::from_secs(365 * 86_400),
        }
    }
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
