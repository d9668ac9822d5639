//! The listening socket and its connection tasks: [`MockServer`] starts them, and shutting it
//! down (or dropping it) closes the socket and aborts every open connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::error::{MockError, Proto};
use crate::state::{Shared, Slot};
use crate::{MockConfig, Stats, routes};

/// A running mock server. Dropping it stops the server too, without waiting.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` with a free port.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts a server on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(config);
        let router = routes::router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, router, Arc::clone(&shared), stopped));
        Ok(MockServer {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the config for the requests that follow, and restarts the `fail_first` count.
    pub fn set_config(&self, config: MockConfig) {
        self.shared.set_config(config);
    }

    /// The config now in force.
    pub fn config(&self) -> MockConfig {
        self.shared.config()
    }

    /// A snapshot of the counters and of the last inference request.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// True as soon as at least one stream has been cancelled by its client (at once if one
    /// already was); false when `timeout` passes first.
    pub async fn wait_for_cancel(&self, timeout: Duration) -> bool {
        self.shared.wait_for_cancel(timeout).await
    }

    /// Closes the listening socket and aborts every open connection (an open stream is cut
    /// and counts as cancelled); once this returns, a connection to the port is refused.
    pub async fn shutdown(self) {
        // The accept loop also stops when the sender is dropped, so a failed send needs no care.
        let _ = self.stop.send(());
        // A join error means the accept loop panicked; it has stopped either way.
        let _ = self.task.await;
    }
}

/// The 503 of a full server, in the shape of the route's protocol.
fn busy(uri: &axum::http::Uri) -> Response {
    let proto = if uri.path().starts_with("/v1/") {
        Proto::OpenAi
    } else {
        Proto::Ollama
    };
    MockError::Injected(StatusCode::SERVICE_UNAVAILABLE)
        .on(proto)
        .into_response()
}

/// `response` with `slot` held by its body, so the request counts until its last byte is
/// sent or the client goes away.
fn hold(response: Response, slot: Slot) -> Response {
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |frame| {
            let _held = &slot;
            frame
        }))
    })
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Fires on `shutdown` and also when the `MockServer` is dropped.
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), Arc::clone(&shared)));
                }
                // Usually out of file descriptors under a load test: back off briefly rather
                // than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting drops each connection with its response body, as a vanished client would.
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, router: Router, shared: Arc<Shared>) {
    // Tokens are small writes; without this Nagle would batch them and hide token timing.
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        let shared = Arc::clone(&shared);
        async move {
            let delay = shared.on_request();
            let slot = match shared.enter(request.method() == Method::POST) {
                Ok(slot) => slot,
                Err(()) => return Ok::<Response, Infallible>(busy(request.uri())),
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(match slot {
                Some(slot) => hold(response, slot),
                None => response,
            })
        }
    });
    // Connection errors (a client that went away, a stream cut by `drop_after`) end only this
    // connection, which is what they should do.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
