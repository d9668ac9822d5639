//! Router tests without a socket: authentication, every route's error shape, and bounds.
use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

/// Every authenticated operation of the OpenAPI document (which the router is built from), as
/// a request path, plus a HEAD, a model-management route that does not exist and an unknown
/// path: all of them are refused without a credential.
async fn authed_routes(h: &Harness) -> Vec<(String, String)> {
    let doc = h
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .json();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if ["/health", "/ready", "/openapi.json"].contains(&path.as_str()) {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase(), path.replace("{id}", "tiny")));
        }
    }
    // Every operation but the three public ones.
    assert_eq!(out.len(), 23, "{out:?}");
    for (m, p) in [("HEAD", "/"), ("POST", "/api/pull"), ("GET", "/nope")] {
        out.push((m.to_owned(), p.to_owned()));
    }
    out
}

fn req(method: &str, path: &str, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Body::from("{}")).unwrap()
}

/// The error shape of the front a path belongs to.
fn assert_shape(path: &str, r: &Resp, code: Option<&str>) {
    if r.body.is_empty() {
        return; // HEAD
    }
    let v = r.json();
    if path.starts_with("/v1") || path.starts_with("/admin") {
        let e = &v["error"];
        assert!(
            e["message"].is_string() && e["type"].is_string(),
            "{path}: {v}"
        );
        if let Some(c) = code {
            assert_eq!(e["code"], c, "{path}: {v}");
        }
    } else {
        assert!(v["error"].is_string(), "{path}: {v}");
    }
}

#[tokio::test]
async fn every_route_but_the_probes_denies_without_a_credential() {
    let h = Harness::single("ollama").await;
    for (method, path) in authed_routes(&h).await {
        for auth in [
            None,
            Some("Bearer wg_bogus"),
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer"),
        ] {
            let r = h.send(req(&method, &path, auth)).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            assert_shape(&path, &r, Some("invalid_api_key"));
        }
    }
    for path in ["/health", "/ready"] {
        let r = h.send(req("GET", path, None)).await;
        assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!r.text().contains("tiny"), "probes reveal no model names");
    }
}

#[tokio::test]
async fn unknown_revoked_expired_and_malformed_keys_are_indistinguishable() {
    let h = Harness::single("ollama").await;
    let (revoked_id, revoked) = h.key_for(&[], None).await;
    h.store.revoke_key(&revoked_id).await.unwrap();
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let (_, expired) = h.key_for(&[], Some(past)).await;
    let mut unknown = h.key.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == 'A' { 'B' } else { 'A' });
    let mut bodies = Vec::new();
    for k in [
        revoked.as_str(),
        expired.as_str(),
        unknown.as_str(),
        "wg_short",
        "not-a-key",
    ] {
        let r = h.send(get_as("/v1/models", Some(k))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{k}");
        bodies.push(r.body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "bodies differ: {bodies:?}"
    );
    assert_eq!(
        h.get("/v1/models").await.status,
        StatusCode::OK,
        "the valid key still works"
    );
}

#[tokio::test]
async fn two_authorization_headers_and_credentials_in_the_url_are_refused() {
    let h = Harness::single("ollama").await;
    let r = h
        .send(
            Request::get("/v1/models")
                .header("authorization", format!("Bearer {}", h.key))
                .header("authorization", "Bearer wg_other")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for q in ["api_key", "key", "access_token", "TOKEN"] {
        let r = h
            .send(get_as(&format!("/v1/models?{q}=x"), Some(&h.key)))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.json()["error"]["code"], "credentials_in_url");
    }
}

#[tokio::test]
async fn model_management_routes_are_never_proxied() {
    let h = Harness::single("ollama").await;
    for (method, path) in [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("HEAD", "/api/blobs/sha256:abc"),
        ("POST", "/api/blobs/sha256:abc"),
    ] {
        let r = h
            .send(req(method, path, Some(&format!("Bearer {}", h.key))))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert_eq!(
        h.mocks[0].stats().requests,
        0,
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn unknown_models_and_models_outside_a_keys_list_answer_alike() {
    let h = Harness::single("ollama").await;
    let (_, limited) = h.key_for(&["tiny"], None).await;
    for (path, body) in [
        ("/v1/chat/completions", chat_body("MODEL", "hi")),
        ("/api/chat", chat_body("MODEL", "hi")),
    ] {
        let unknown = body.to_string().replace("MODEL", "nosuch");
        let forbidden = body.to_string().replace("MODEL", "other");
        let r1 = h.send(post_as(path, &unknown, Some(&limited))).await;
        let r2 = h.send(post_as(path, &forbidden, Some(&limited))).await;
        assert_eq!(r1.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r2.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r1.text().replace("nosuch", "X"),
            r2.text().replace("other", "X")
        );
        if path.starts_with("/v1") {
            assert_eq!(r1.json()["error"]["code"], "model_not_found");
        }
        let ok = h
            .send(post_as(
                path,
                &body.to_string().replace("MODEL", "fast"),
                Some(&limited),
            ))
            .await;
        assert_eq!(
            ok.status,
            StatusCode::OK,
            "an alias of an allowed model is allowed"
        );
    }
    let listed = h.send(get_as("/v1/models", Some(&limited))).await.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "fast"], "a limited key sees only its models");
}

#[tokio::test]
async fn hostile_model_names_are_refused_before_lookup() {
    let h = Harness::single("ollama").await;
    let long = "a".repeat(200);
    for name in [
        "../etc/passwd",
        "%2e%2e/x",
        "sha256:abcd",
        "/abs/path",
        "a\u{0}b",
        long.as_str(),
    ] {
        let r = h.post("/api/chat", chat_body(name, "hi")).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 404),
            "{name:?}: {}",
            r.status
        );
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
}

#[tokio::test]
async fn bad_bodies_get_clear_400s_and_413s() {
    let h = Harness::single_with(
        "ollama",
        mock_cfg(),
        "[limits]\nmax_body_bytes = 4096\nmax_messages = 3\n",
    )
    .await;
    // Malformed JSON.
    let r = h
        .send(post_as("/v1/chat/completions", "{\"model\":", Some(&h.key)))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // Missing field.
    let r = h.post("/api/chat", json!({"messages": []})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("model"));
    // Deep nesting: a 400, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let h2 = Harness::single("ollama").await;
    let r = h2
        .send(post_as("/v1/chat/completions", &deep, Some(&h2.key)))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Oversize, with a Content-Length.
    let big =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "x".repeat(10_000)}]});
    let r = h.post("/v1/chat/completions", big.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    // Oversize, chunked (no Content-Length).
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = h
        .send(
            Request::post("/api/chat")
                .header("authorization", format!("Bearer {}", h.key))
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].is_string(), "Ollama shape on /api");
    // Too many messages.
    let many =
        json!({"model": "tiny", "messages": vec![json!({"role": "user", "content": "x"}); 4]});
    let r = h.post("/v1/chat/completions", many).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "messages");
    assert_eq!(
        h.mocks[0].stats().inference_requests,
        0,
        "no bad request reached the backend"
    );
}

#[tokio::test]
async fn caps_reject_or_clamp_and_the_context_window_is_enforced() {
    let h = Harness::single_with("ollama", mock_cfg(), "[limits]\nmax_output_tokens = 64\n").await;
    let over =
        json!({"model": "tiny", "max_tokens": 65, "messages": [{"role": "user", "content": "hi"}]});
    let r = h.post("/v1/chat/completions", over).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    let r = h
        .post(
            "/api/generate",
            json!({"model": "tiny", "prompt": "x", "options": {"num_predict": 100}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("num_predict"));
    let r = h.post("/api/chat", json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "options": {"num_ctx": 100000}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("num_ctx"));
    // The default window is 4096 tokens; 20k bytes is about 6.7k tokens by the estimate.
    let r = h
        .post(
            "/v1/chat/completions",
            chat_body("tiny", &"word ".repeat(4000)),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "messages");
    assert!(
        !e["message"].as_str().unwrap().contains("word"),
        "the prompt is never quoted"
    );

    let clamp = Harness::single_with(
        "ollama",
        mock_cfg(),
        "[limits]\nmax_output_tokens = 4\nover_cap = \"clamp\"\n",
    )
    .await;
    let r = clamp.post("/v1/chat/completions", json!({"model": "tiny", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-wardgate-clamped"], "max_tokens");
    assert_eq!(
        r.json()["usage"]["completion_tokens"],
        4,
        "the backend was asked for the cap"
    );
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn wrong_methods_get_405_in_the_fronts_shape() {
    let h = Harness::single("ollama").await;
    let r = h.get("/v1/chat/completions").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let r = h.get("/api/chat").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn listing_and_info_routes() {
    let h = Harness::single("ollama").await;
    let models = h.get("/v1/models").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "fast", "other"]);
    assert_eq!(models["data"][0]["object"], "model");
    assert!(models["data"][0]["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(h.get("/v1/models/fast").await.json()["id"], "fast");
    assert_eq!(
        h.get("/v1/models/nosuch").await.status,
        StatusCode::NOT_FOUND
    );
    let tags = h.get("/api/tags").await.json();
    assert_eq!(tags["models"][0]["name"], "tiny");
    assert_eq!(tags["models"][0]["model"], "tiny");
    let show = h.post("/api/show", json!({"model": "fast"})).await;
    assert_eq!(show.status, StatusCode::OK);
    assert_eq!(show.json()["model_info"]["wardgate.context_length"], 4096);
    assert_eq!(
        h.post("/api/show", json!({"model": "nosuch"})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.post("/api/show", json!({})).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(h.get("/api/version").await.json()["version"].is_string());
    let root = h.get("/").await;
    assert_eq!(
        (root.status, root.text().as_str()),
        (StatusCode::OK, "Ollama is running")
    );
    let head = h
        .send(req("HEAD", "/", Some(&format!("Bearer {}", h.key))))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    let r = h.get("/health").await;
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert!(!h.get("/api/ps").await.json()["models"].is_null());
}

#[tokio::test]
async fn ready_follows_backend_health() {
    let h = Harness::single("ollama").await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    let r = h.send(get_as("/ready", None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["redis"], "not configured", "{}", r.text());
    assert_eq!(r.json()["degraded"], false, "{}", r.text());

    let toml = format!(
        "[[backends]]\nname = \"dead\"\nkind = \"ollama\"\nurl = \"{}\"\n[[models]]\nname = \"m\"\nchain = [{{ backend = \"dead\", model = \"m\" }}]\n",
        dead_url()
    );
    let h = Harness::from_toml(&toml, vec![]).await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    let r = h.send(get_as("/ready", None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["backends"], false);
    let r = h.post("/api/chat", chat_body("m", "hi")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !r.text().contains("127.0.0.1"),
        "no backend address leaks: {}",
        r.text()
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let h = Harness::single_with(
        "ollama",
        mock_cfg(),
        "[rate_limit]\nrequests_per_minute = 2\n",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            h.post("/v1/chat/completions", chat_body("tiny", "hi"))
                .await
                .status,
            StatusCode::OK
        );
    }
    let r = h
        .post("/v1/chat/completions", chat_body("tiny", "hi"))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&secs), "{secs}");
    let r = h.post("/api/chat", chat_body("tiny", "hi")).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "both fronts share the key's allowance"
    );
    assert!(r.headers.contains_key("retry-after"));
    let (_, other) = h.key_for(&[], None).await;
    let r = h
        .send(post_as(
            "/v1/chat/completions",
            &chat_body("tiny", "hi").to_string(),
            Some(&other),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "other keys are unaffected");
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let h = Harness::single("ollama").await;
    let a = h.get("/v1/models").await.headers["x-request-id"].clone();
    let b = h.send(get_as("/v1/models", None)).await.headers["x-request-id"].clone();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
}

#[tokio::test]
async fn refusals_that_leave_the_body_unread_close_the_connection() {
    let h = Harness::single("ollama").await;
    let body = chat_body("tiny", "hi").to_string();
    let r = h.send(post_as("/api/chat", &body, Some("wg_wrong"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["connection"], "close",
        "clients must not reuse the connection"
    );
    let r = h.send(post_as("/api/nope", &body, Some(&h.key))).await;
    assert_eq!(r.headers["connection"], "close");
    let ok = h.send(post_as("/api/chat", &body, Some(&h.key))).await;
    assert!(
        !ok.headers.contains_key("connection"),
        "successful requests keep the connection"
    );
    let get = h.send(get_as("/v1/models", Some("wg_wrong"))).await;
    assert!(
        !get.headers.contains_key("connection"),
        "no body, nothing left unread"
    );
}

#[tokio::test]
async fn verified_keys_are_cached_for_the_ttl_and_revocation_is_immediate_without_a_cache() {
    let h = Harness::single_with("ollama", mock_cfg(), "[auth]\nkey_cache_ttl = \"5m\"\n").await;
    let (id, key) = h.key_for(&[], None).await;
    assert_eq!(
        h.send(get_as("/v1/models", Some(&key))).await.status,
        StatusCode::OK
    );
    h.store.revoke_key(&id).await.unwrap();
    assert_eq!(
        h.send(get_as("/v1/models", Some(&key))).await.status,
        StatusCode::OK,
        "within the TTL the cached verdict stands (the documented bound)"
    );
    h.state.key_cache.as_ref().unwrap().clear();
    assert_eq!(
        h.send(get_as("/v1/models", Some(&key))).await.status,
        StatusCode::UNAUTHORIZED
    );

    let off = Harness::single_with("ollama", mock_cfg(), "[auth]\nkey_cache_ttl = \"0s\"\n").await;
    assert!(off.state.key_cache.is_none());
    let (id, key) = off.key_for(&[], None).await;
    assert_eq!(
        off.send(get_as("/v1/models", Some(&key))).await.status,
        StatusCode::OK
    );
    off.store.revoke_key(&id).await.unwrap();
    assert_eq!(
        off.send(get_as("/v1/models", Some(&key))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Model names may contain `/` (`org/model`): `GET /v1/models/{id}` takes the rest of the path
/// as the name, so such a name is looked up (404 `model_not_found` here), not an unknown route.
#[tokio::test]
async fn a_model_name_with_a_slash_is_one_path_parameter() {
    let h = Harness::single("ollama").await;
    let r = h.send(get_as("/v1/models/org/no-such", Some(&h.key))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found", "{}", r.text());
    let r = h.send(get_as("/v1/models/tiny", Some(&h.key))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
