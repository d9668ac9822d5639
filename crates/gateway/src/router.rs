//! The request path, top to bottom. Read this file to know what happens to a request.
//!
//! Unauthenticated routes are listed explicitly (`/health`, `/ready`, `/openapi.json`); every
//! other route — including unknown paths — sits behind `auth::authenticate`, so a route added
//! later is protected unless someone deliberately adds it to the public list. The OpenAPI
//! document is public because it describes routes and shapes only (no configuration, model
//! names or secrets); each route below is also described there (`openapi.rs`, on the handlers),
//! and a test checks that the two lists match.

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth;
use crate::error::{ApiError, Front};
use crate::handlers::{self, admin, ollama, openai, probes};
use crate::openapi;
use crate::record;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    // Metadata routes of both fronts: they take from the key's (and tenant's) request rate
    // like the model routes, so no key can query them at line rate.
    let metadata = Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*id}", get(openai::model))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route("/", get(ollama::root))
        .route_layer(from_fn_with_state(state.clone(), handlers::metered));

    // Model routes: `user` or `break_glass`.
    let inference = Router::new()
        // OpenAI front.
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        // Ollama front. Model management (/api/pull, /api/push, /api/create, /api/delete,
        // /api/copy, /api/blobs/*) is deliberately absent: it falls through to 404 and is never
        // proxied.
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .merge(metadata)
        // Outside the metering above: a caller without the role is refused before it is counted.
        .route_layer(from_fn_with_state(auth::INFERENCE, auth::authorize));

    // Keys and tenants: `admin`.
    let admin_routes = Router::new()
        .route("/admin/keys", get(admin::list_keys).post(admin::create_key))
        .route("/admin/keys/{id}", delete(admin::revoke_key))
        .route("/admin/keys/{id}/rotate", post(admin::rotate_key))
        .route(
            "/admin/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route("/admin/config/reload", post(admin::reload_config))
        .route_layer(from_fn_with_state(auth::ADMIN, auth::authorize));

    // The audit log: `auditor` or `break_glass`.
    let audit_routes = Router::new()
        .route("/admin/audit", get(admin::query_audit))
        .route_layer(from_fn_with_state(auth::AUDIT_READ, auth::authorize));

    // The security counters: `admin` or `auditor` (a scraper holds such a key).
    let metrics_routes = Router::new()
        .route("/admin/metrics", get(crate::metrics::handler))
        .route_layer(from_fn_with_state(auth::METRICS, auth::authorize));

    // Everything here needs a credential.
    let authenticated = inference
        .merge(admin_routes)
        .merge(audit_routes)
        .merge(metrics_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Deny by default: runs for every route above and for the fallback.
        .layer(from_fn_with_state(state.clone(), auth::authenticate));

    // The only routes without a credential: liveness and readiness for orchestrators, and the
    // API description (no secrets in it) for client generators.
    let public = Router::new()
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .route("/openapi.json", get(openapi::serve));

    // With TLS on, browsers are told to use nothing else (on every response, errors included).
    let hsts = (state.config.tls.is_some() && !state.config.server.hsts_max_age.is_zero())
        .then(|| {
            let value = format!(
                "max-age={}; includeSubDomains",
                state.config.server.hsts_max_age.as_secs()
            );
            HeaderValue::from_str(&value).ok()
        })
        .flatten()
        .map(|v| SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, v));

    public.merge(authenticated).with_state(state.clone()).layer(
        ServiceBuilder::new()
            .option_layer(hsts)
            // Outermost: a panic anywhere below becomes a generic 500, never a stack trace in
            // a body or a dropped connection.
            .layer(CatchPanicLayer::custom(panic_response))
            // One record and one log line per request, tied to the end of the response body;
            // sits above auth so denials are logged too.
            .layer(from_fn_with_state(state.clone(), record::observe))
            // Credentials are marked sensitive so no tracing layer ever prints them.
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                header::COOKIE,
                HeaderName::from_static("x-api-key"),
            ])),
    )
}

async fn not_found(req: Request) -> axum::response::Response {
    ApiError::RouteNotFound.to_response(Front::of_path(req.uri().path()))
}

async fn method_not_allowed(req: Request) -> axum::response::Response {
    ApiError::MethodNotAllowed.to_response(Front::of_path(req.uri().path()))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    // The payload may quote request data; it is not logged or returned.
    tracing::error!(reason = "panic", "a handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({"error": {"message": "internal error", "type": "server_error", "param": null, "code": null}})),
    )
        .into_response()
}
