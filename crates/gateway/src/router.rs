//! The request path, top to bottom. Read this file to know what happens to a request.
//!
//! Unauthenticated routes are listed explicitly (`/health`, `/ready`, `/openapi.json`); every
//! other route — including unknown paths — sits behind `auth::authenticate`, so a route added
//! later is protected unless someone deliberately adds it to the public list. The OpenAPI
//! document is public because it describes routes and shapes only (no configuration, model
//! names or secrets); each route is registered once, with its description, and the document
//! is built from the same table.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Front};
use crate::handlers::{self, admin, ollama, openai, probes};
use crate::identity::principal;
use crate::middleware::auth;
use crate::middleware::record;
use crate::openapi;
use crate::state::AppState;

/// Every route, each registered once with its OpenAPI description (`routes!` takes the path
/// and method from the handler's `#[utoipa::path]`, so a route cannot exist undescribed): the
/// public ones and the ones behind a credential, each with the layers of its group.
fn route_table(state: &AppState) -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    // Metadata routes of both fronts: they take from the key's (and tenant's) request rate
    // like the model routes, so no key can query them at line rate.
    let metadata = OpenApiRouter::new()
        .routes(routes!(openai::models))
        .routes(routes!(openai::model))
        .routes(routes!(ollama::tags))
        .routes(routes!(ollama::show))
        .routes(routes!(ollama::ps))
        .routes(routes!(ollama::version))
        .routes(routes!(ollama::root))
        .route_layer(from_fn_with_state(state.clone(), handlers::metered));

    // Model routes: `user` or `break_glass`.
    let inference = OpenApiRouter::new()
        // OpenAI front.
        .routes(routes!(openai::chat))
        .routes(routes!(openai::completions))
        .routes(routes!(openai::embeddings))
        // Ollama front. Model management (/api/pull, /api/push, /api/create, /api/delete,
        // /api/copy, /api/blobs/*) is deliberately absent: it falls through to 404 and is never
        // proxied.
        .routes(routes!(ollama::chat))
        .routes(routes!(ollama::generate))
        .routes(routes!(ollama::embed))
        .routes(routes!(ollama::embeddings))
        .merge(metadata)
        // Outside the metering above: a caller without the role is refused before it is counted.
        .route_layer(from_fn_with_state(principal::INFERENCE, auth::authorize));

    // Keys and tenants: `admin`.
    let admin_routes = OpenApiRouter::new()
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::rotate_key))
        .routes(routes!(admin::list_tenants, admin::create_tenant))
        .routes(routes!(admin::reload_config))
        .route_layer(from_fn_with_state(principal::ADMIN, auth::authorize));

    // The audit log: `auditor` or `break_glass`.
    let audit_routes = OpenApiRouter::new()
        .routes(routes!(admin::query_audit))
        .route_layer(from_fn_with_state(principal::AUDIT_READ, auth::authorize));

    // The security counters: `admin` or `auditor` (a scraper holds such a key).
    let metrics_routes = OpenApiRouter::new()
        .routes(routes!(crate::metrics::admin::handler))
        .route_layer(from_fn_with_state(principal::METRICS, auth::authorize));

    // The only routes without a credential: liveness and readiness for orchestrators, and the
    // API description (no secrets in it) for client generators.
    let public = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(probes::health))
        .routes(routes!(probes::ready))
        .routes(routes!(openapi::serve));

    let authenticated = inference
        .merge(admin_routes)
        .merge(audit_routes)
        .merge(metrics_routes);
    (public, authenticated)
}

pub fn router(state: AppState) -> Router {
    let (public, authenticated) = route_table(&state);
    let (public, doc) = public.split_for_parts();
    let (authenticated, authenticated_doc) = authenticated.split_for_parts();
    let document = openapi::Document::render(doc.merge_from(authenticated_doc));

    // Everything here needs a credential.
    let authenticated = authenticated
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Deny by default: runs for every route above and for the fallback.
        .layer(from_fn_with_state(state.clone(), auth::authenticate));
    let public = public.layer(Extension(Arc::new(document)));

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
            // Outermost: a panic anywhere below becomes a generic 500 in the front's error
            // shape, never a stack trace in a body or a dropped connection.
            .layer(axum::middleware::from_fn(
                crate::error::panics_in_front_shape,
            ))
            .layer(CatchPanicLayer::custom(crate::error::panic_response))
            // A client's W3C `traceparent` is the parent of the request's trace span; above the
            // record, which starts that span.
            .layer(axum::middleware::from_fn(crate::telemetry::client_parent))
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
