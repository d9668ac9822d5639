//! The connection layer under the router: accepting, TLS, and the protocol bounds that keep a
//! slow or hostile client from holding resources. Written on hyper-util's connection builder
//! (not `axum::serve`) because the bounds below are settings of hyper's HTTP/1 and HTTP/2
//! connections that `axum::serve` does not expose.
//!
//! - At most `max_connections_per_ip` connections from one client address (an IPv4 address or
//!   an IPv6 /64); one past it is closed as soon as it is accepted, before it takes one of the
//!   `max_connections` slots. Peers in `trusted_proxies` are exempt: every connection of a load
//!   balancer comes from its own address.
//! - At most `max_connections` connections at once; past it, new connections wait (one accepted,
//!   the rest in the kernel's accept backlog) until one closes (no work is done for them).
//! - A connection must deliver its first request head within `header_read_timeout` of being
//!   accepted: the bound runs from accept, over silence before the first byte, the TLS handshake
//!   and the HTTP/2 preface alike (hyper's HTTP/1 header timer starts only once the protocol is
//!   known, and the detection of HTTP/1 or HTTP/2 waits without any bound). A keep-alive
//!   connection with no request in flight gets the same time for its next head, counted from
//!   the end of the last response (hyper's HTTP/1 timer does the same; HTTP/2 has none). The
//!   body has `body_read_timeout` (see `extract`).
//! - Heads over `max_header_bytes` or with more than `max_headers` fields are refused (431);
//!   HTTP/2 is bounded by `http2_max_streams` concurrent streams and the same header size.
//! - Header values with CR or LF never reach the router: hyper refuses them while parsing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::serve::tls::{ClientCert, Tls};

/// The router requests are served by, swapped as a whole on reload.
#[derive(Clone)]
pub struct LiveRouter(Arc<RwLock<axum::Router>>);

impl LiveRouter {
    pub fn new(router: axum::Router) -> LiveRouter {
        LiveRouter(Arc::new(RwLock::new(router)))
    }

    pub fn get(&self) -> axum::Router {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `router` from the next request on.
    pub fn set(&self, router: axum::Router) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = router;
    }
}

pub use crate::config::server::ServerLimits;

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
    app: LiveRouter,
    limits: ServerLimits,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let builder = Arc::new(connection_builder(&limits));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerAddress::new(
        limits.max_connections_per_ip,
        limits.trusted_proxies.clone(),
    ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Every connection's task, so the ones left at the drain deadline can be closed and
    // waited for.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Finished connections are reaped as we go (the set holds only live ones).
        while connections.try_join_next().is_some() {}
        // Accepted before a slot is taken, so that a connection over its address's cap is
        // closed at once instead of waiting for (and then holding) one of the global slots.
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
        let accepted = Instant::now();
        let Some(address_slot) = per_ip.admit(peer.ip()) else {
            per_ip.refused(peer.ip());
            drop(stream);
            continue;
        };
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let bounds = IdleBounds {
            accepted,
            head: limits.header_read_timeout,
        };
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _permit = permit;
            let _address_slot = address_slot;
            let activity = Arc::new(Activity::new(accepted));
            match tls {
                None => {
                    let svc = service(app, peer, None, activity.clone());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    supervise(watcher.watch(conn.into_owned()), &activity, bounds).await;
                }
                Some(tls) => {
                    // The handshake is part of the first request's time, from accept.
                    let accepted = tokio::time::timeout_at(
                        bounds.accepted + bounds.head,
                        tls.acceptor().accept(stream),
                    )
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
                    let svc = service(app, peer, cert, activity.clone());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    supervise(watcher.watch(conn.into_owned()), &activity, bounds).await;
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

/// The time bounds of a connection with no request in flight.
#[derive(Clone, Copy)]
struct IdleBounds {
    accepted: Instant,
    /// For the next request head: from accept, or from the end of the last response.
    head: Duration,
}

/// What the connection's supervisor knows of its requests: how many are in flight (from the
/// head's arrival until the response body is done or dropped) and since when none is.
struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from accept to the moment the last request finished (0: none has).
    idle_since_ms: AtomicU64,
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new(accepted: Instant) -> Activity {
        Activity {
            accepted,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// When the connection is to be closed if nothing arrives; `None` while a request is in
    /// flight.
    fn deadline(&self, b: IdleBounds) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(b.accepted + idle_since + b.head)
    }
}

/// One request in flight; dropped with the response body (or with the request, if the
/// client leaves first).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.accepted.elapsed().as_millis()).unwrap_or(u64::MAX / 2);
        // Stored before the count drops, so the supervisor never sees zero in flight with an
        // older idle time.
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.changed.notify_one();
    }
}

/// Drives a connection until it ends, or until it has had no request in flight for longer
/// than its bounds allow; then drops it, which closes the socket.
async fn supervise(conn: impl std::future::Future, activity: &Activity, bounds: IdleBounds) {
    let mut conn = std::pin::pin!(conn);
    loop {
        let deadline = activity.deadline(bounds);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut conn => return,
            () = activity.changed.notified() => {}
            () = expired => {
                // Requests start inside `conn`'s poll, on this task: nothing can have begun
                // since the deadline was read unless the count says so.
                if activity
                    .deadline(bounds)
                    .is_some_and(|d| d <= Instant::now())
                {
                    tracing::debug!("closing a connection with no request within its time bound");
                    return;
                }
            }
        }
    }
}

/// A response body that holds its request's `InFlight` until hyper is done with it.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections per client address, and the cap on them.
struct PerAddress {
    cap: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals since the last warning, and when that was (ms since `epoch`), so that a flood
    /// is one log line per interval, not one per connection.
    refused: AtomicU64,
    warned_ms: AtomicU64,
    epoch: Instant,
}

/// How often the per-address refusals are summarized in the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl PerAddress {
    fn new(cap: usize, exempt: Vec<IpNet>) -> PerAddress {
        PerAddress {
            cap: cap.max(1),
            exempt,
            open: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it already has the most.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        if self.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(AddressSlot(None));
        }
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot(Some((self.clone(), key))))
    }

    fn refused(&self, ip: IpAddr) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(REFUSAL_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        if due
            && self
                .warned_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                peer = %ip,
                refused = self.refused.swap(0, Ordering::Relaxed),
                limit = self.cap,
                "closed connections over server.max_connections_per_ip (count since the last such line)"
            );
        }
    }
}

/// One open connection counted against its address; gives the slot back when dropped.
struct AddressSlot(Option<(Arc<PerAddress>, IpAddr)>);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some((per, key)) = self.0.take() else {
            return;
        };
        let mut open = per.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

/// The unit the per-address cap counts: an IPv4 address (IPv4-mapped IPv6 included), or an
/// IPv6 /64, since one host is routinely given a whole /64 to draw addresses from.
fn address_key(ip: IpAddr) -> IpAddr {
    crate::identity::net::SourceBlock::of(ip, 64).first()
}

/// The current router with what is known about the connection added to every request, each
/// request counted in flight until its response body is done.
fn service(
    app: LiveRouter,
    peer: SocketAddr,
    cert: Option<ClientCert>,
    activity: Arc<Activity>,
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
            let in_flight = activity.start();
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(c) = &cert {
                req.extensions_mut().insert(c.clone());
            }
            let answer = app.get().oneshot(req);
            async move {
                let resp = answer.await?;
                Ok(resp.map(|inner| {
                    axum::body::Body::new(Tracked {
                        inner,
                        _in_flight: in_flight,
                    })
                }))
            }
        },
    ))
}
