//! The metrics listener (`metrics.listen`): `GET /metrics` and nothing else, over plain HTTP,
//! with the same connection bounds as the role's own listener. It has no authentication, so it
//! listens on loopback by default and, in containers, on an internal network only; nothing it
//! serves is secret (see the parent module's invariant).

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::serve::server::LiveRouter;
use crate::serve::tls::Tls;
use crate::state::AppState;

/// The state now serving (a reload swaps it), as the role's composition root knows it.
pub type CurrentState = Arc<dyn Fn() -> AppState + Send + Sync>;

/// What a scrape needs: the state now serving, the role's name for the `listener` label, and
/// the role's TLS (for its certificate's expiry).
#[derive(Clone)]
struct Scrape {
    current: CurrentState,
    role: &'static str,
    tls: Option<Tls>,
}

async fn metrics(axum::extract::State(s): axum::extract::State<Scrape>) -> Response {
    let state = (s.current)();
    let body = super::render(&state, s.role, s.tls.as_ref()).await;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The listener's router: `GET /metrics`; 404 elsewhere, 405 for other methods.
fn router(scrape: Scrape) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(scrape)
}

/// Serves `/metrics` on `listener` until the returned task is aborted. Installs the recorder
/// first, so that everything the role records from now on is served.
pub fn spawn(
    listener: tokio::net::TcpListener,
    current: CurrentState,
    role: &'static str,
    tls: Option<Tls>,
) -> tokio::task::JoinHandle<()> {
    let handle = super::install();
    let state = current();
    super::configure(&state.config.metrics);
    let limits = state.config.server.clone();
    let grace = state.config.shutdown_grace;
    let app = LiveRouter::new(router(Scrape { current, role, tls }));
    let serve =
        crate::serve::server::run(listener, app, limits, None, std::future::pending(), grace);
    // Histogram observations wait in the recorder until a scrape or an upkeep folds them into
    // their buckets: without scrapes they would pile up, thousands a second under load.
    let upkeep = async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    };
    tokio::spawn(async move {
        tokio::join!(serve, upkeep);
    })
}

/// How often the recorder's pending observations are folded in when no scrape does it.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
