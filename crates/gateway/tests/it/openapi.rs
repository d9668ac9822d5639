//! The OpenAPI document at `/openapi.json`: served without a credential, describing exactly the
//! routes the router serves, each authenticated one with the bearer requirement.
use std::collections::BTreeSet;

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use wardgate_gateway::openapi::BEARER;
use wardgate_store::Role;

/// The operations anyone may call.
const PUBLIC: &[&str] = &["/health", "/ready", "/openapi.json"];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn served_document(h: &Harness) -> Value {
    let r = h
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    r.json()
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_served_without_a_key_and_parses() {
    let h = Harness::single("ollama").await;
    let doc = served_document(&h).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "wardgate");
    // (utoipa's own reader cannot read back every schema it writes, e.g. the any-value `{}`;
    // the e2e suite parses the document with schemathesis.)
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    assert!(
        doc["components"]["schemas"]
            .as_object()
            .is_some_and(|s| !s.is_empty())
    );
    // It names no model, backend or key.
    let text = doc.to_string();
    for secret in ["tiny", &h.key, "127.0.0.1"] {
        assert!(!text.contains(secret), "the document mentions {secret}");
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let h = Harness::single("ollama").await;
    let doc = served_document(&h).await;
    // The router registers each route with its description (`routes!` in `router.rs`), so
    // the document is the route list; below, the router answers every route it lists.
    let listed: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    // 26 operations: a route added or dropped changes this on purpose, never by accident.
    assert_eq!(listed.len(), 26, "{listed:?}");
    for absent in [
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/delete",
        "/api/copy",
    ] {
        assert!(doc["paths"].get(absent).is_none(), "{absent} is listed");
    }

    // And the router answers each of them (not with its unknown-route or wrong-method answer),
    // with a key whose roles reach every route group.
    let (_, key) = h
        .key_with_roles("operator", &[Role::User, Role::Admin, Role::Auditor], None)
        .await;
    for (method, path) in &listed {
        let uri = path.replace("{id}", "tiny");
        let unknown = if uri.starts_with("/v1/") {
            "/v1/no-such-route"
        } else if uri.starts_with("/admin/") {
            "/admin/no-such-route"
        } else {
            "/api/no-such-route"
        };
        let missing = h.send(get_as(unknown, Some(&key))).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let req = match method.as_str() {
            "get" => get_as(&uri, Some(&key)),
            "delete" => delete_as(&uri, Some(&key)),
            "post" => post_as(&uri, &json!({"model": "tiny"}).to_string(), Some(&key)),
            other => panic!("no request for {other}"),
        };
        let r = h.send(req).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(r.status == StatusCode::NOT_FOUND && r.body == missing.body),
            "{method} {path} is not routed: {}",
            r.text()
        );
    }
}

/// A route can only be added undescribed by registering it past `routes!`: `router.rs` never
/// does.
#[test]
fn the_router_registers_routes_only_with_their_descriptions() {
    let src = include_str!("../../src/router.rs");
    for call in [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".fallback_service(",
    ] {
        assert!(
            !src.contains(call),
            "router.rs calls {call}: register routes with `routes!`"
        );
    }
    assert!(src.contains(".routes(routes!("));
}

#[tokio::test]
async fn every_operation_but_the_public_ones_requires_the_bearer_scheme() {
    let h = Harness::single("ollama").await;
    let doc = served_document(&h).await;
    let scheme = &doc["components"]["securitySchemes"][BEARER];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert!(
        doc.get("security").is_none(),
        "no document-wide requirement"
    );
    for (method, path, op) in operations(&doc) {
        if PUBLIC.contains(&path.as_str()) {
            assert!(op.get("security").is_none(), "{method} {path} is public");
            continue;
        }
        assert_eq!(
            op["security"],
            json!([{BEARER: []}]),
            "{method} {path} must require the bearer scheme"
        );
        // Every authenticated operation documents the credential failures in its front's shape.
        let shape = if path.starts_with("/v1/") || path.starts_with("/admin/") {
            "#/components/schemas/OpenAiErrorBody"
        } else {
            "#/components/schemas/OllamaErrorBody"
        };
        for status in ["400", "401", "403", "429", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"], shape,
                "{method} {path} {status}"
            );
        }
        if op.get("requestBody").is_some() {
            assert!(
                op["responses"].get("413").is_some(),
                "{method} {path} takes a body: 413"
            );
        }
    }
}

#[tokio::test]
async fn every_referenced_schema_exists() {
    let doc = served_document(&Harness::single("ollama").await).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(
            schemas.contains_key(name),
            "{r} is referenced but not defined"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap().to_owned());
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}
