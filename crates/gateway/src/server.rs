//! The connection layer under the router: accepting, TLS, and the protocol bounds that keep a
//! slow or hostile client from holding resources. Written on hyper-util's connection builder
//! (not `axum::serve`) because the bounds below are settings of hyper's HTTP/1 and HTTP/2
//! connections that `axum::serve` does not expose.
//!
//! - At most `max_connections` connections at once; past it, new connections wait in the
//!   kernel's accept backlog until one closes (no work is done for them).
//! - A client must finish sending its request head within `header_read_timeout` (slowloris);
//!   the TLS handshake gets the same bound. The body has `body_read_timeout` (see `extract`).
//! - Heads over `max_header_bytes` or with more than `max_headers` fields are refused (431);
//!   HTTP/2 is bounded by `http2_max_streams` concurrent streams and the same header size.
//! - Header values with CR or LF never reach the router: hyper refuses them while parsing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tower::ServiceExt as _;

use crate::tls::{ClientCert, Tls};

/// Bounds on connections and on the HTTP protocol itself.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
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
            http2_max_streams: 100,
            trusted_proxies: Vec::new(),
            hsts_max_age: Duration::from_secs(365 * 86_400),
        }
    }
}

/// hyper's smallest read buffer; a smaller header bound would be refused by hyper itself.
const MIN_HEADER_BUFFER: usize = 8192;

fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BUFFER))
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // An idle HTTP/2 connection is pinged and closed when the peer stops answering.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts connections until `shutdown` resolves, serving each with `app`; then stops
/// accepting, lets open connections finish for at most `grace`, closes the rest, and returns
/// once every connection's task has ended.
///
/// Closing a connection drops its in-flight requests, whose records queue their terminal
/// audit events (`client_abort`) as they drop: returning only after that lets the caller stop
/// the audit writer knowing those events are in its queue.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: crate::reload::LiveRouter,
    limits: ServerLimits,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let builder = Arc::new(connection_builder(&limits));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Every connection's task, so the ones left at the drain deadline can be closed and
    // waited for.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Finished connections are reaped as we go (the set holds only live ones).
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let svc = service(app, peer, None);
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(tls) => {
                    let accepted =
                        tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream))
                            .await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| ClientCert::from_der(c));
                    let svc = service(app, peer, cert);
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "drain deadline reached; closing remaining connections"
        );
    }
    connections.shutdown().await;
}

/// The current router with what is known about the connection added to every request.
fn service(
    app: crate::reload::LiveRouter,
    peer: SocketAddr,
    cert: Option<ClientCert>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<axum::response::Response, std::convert::Infallible>,
    > + Send
             + 'static,
> + Clone {
    hyper_util::service::TowerToHyperService::new(tower::service_fn(
        move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(c) = &cert {
                req.extensions_mut().insert(c.clone());
            }
            app.get().oneshot(req)
        },
    ))
}

/// The address a request came from: the peer, unless the peer is a trusted proxy, in which
/// case the `X-Forwarded-For` chain is walked from the right (the hop the proxy itself added)
/// past every trusted proxy to the first address that is not one. An unparseable entry ends
/// the walk: nothing left of it can be believed.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a http::HeaderValue>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> Vec<http::HeaderValue> {
        values
            .iter()
            .map(|v| http::HeaderValue::from_str(v).unwrap())
            .collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["203.0.113.9"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.7"), h.iter(), &trusted),
            ip("198.51.100.7")
        );
        // A trusted proxy's is believed.
        assert_eq!(
            client_ip(ip("10.1.2.3"), h.iter(), &trusted),
            ip("203.0.113.9")
        );
        // No proxies configured: never believed.
        assert_eq!(client_ip(ip("10.1.2.3"), h.iter(), &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged the leftmost entry; the proxy chain appended the real ones.
        let h = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), h.iter(), &trusted),
            ip("203.0.113.9")
        );
        // Garbage ends the walk at the last address believed.
        let h = xff(&["1.1.1.1, not-an-ip, 10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), h.iter(), &trusted),
            ip("10.0.0.5")
        );
        // No header from a trusted proxy: the proxy is the source.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff(&[]).iter(), &trusted),
            ip("10.0.0.1")
        );
    }
}
