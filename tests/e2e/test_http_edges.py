"""Raw HTTP at the edges, where no client library would send such a request: probes, missing
auth, oversize and malformed bodies, routes that are deliberately absent."""

from __future__ import annotations

import json
import socket

import pytest

from conftest import CLIENT_TIMEOUT_S, MODEL_A

FIVE_MIB = 5 * 1024 * 1024


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_need_no_auth(one_gateway, path):
    with one_gateway.http(auth=False) as http:
        assert http.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/api/tags"),
        ("POST", "/api/chat"),
        ("GET", "/api/version"),
        ("GET", "/"),
    ],
)
def test_missing_auth_is_401(one_gateway, method, path):
    body = {"model": MODEL_A, "messages": [{"role": "user", "content": "hi"}]}
    with one_gateway.http(auth=False) as http:
        resp = http.request(method, path, json=body if method == "POST" else None)
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("application/json")


def test_openai_error_shape(one_gateway):
    with one_gateway.http(key="wg_wrong") as http:
        resp = http.post("/v1/chat/completions", json={"model": MODEL_A, "messages": []})
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert isinstance(error["message"], str) and error["message"]
    assert "type" in error and "param" in error


def test_ollama_error_shape(one_gateway):
    with one_gateway.http(key="wg_wrong") as http:
        resp = http.post("/api/chat", json={"model": MODEL_A, "messages": []})
    assert resp.status_code == 401
    assert isinstance(resp.json()["error"], str)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/v1/embeddings"])
def test_oversize_body_is_413(one_gateway, path):
    big = json.dumps(
        {"model": MODEL_A, "messages": [{"role": "user", "content": "x" * FIVE_MIB}]}
    ).encode()
    with one_gateway.http() as http:
        resp = http.post(path, content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b'{"model": "alpha", "messages": "not a list"}'],
    ids=["syntax", "empty", "wrong-type"],
)
def test_malformed_json_openai_is_400(one_gateway, body):
    with one_gateway.http() as http:
        resp = http.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed"])
def test_malformed_json_ollama_is_400(one_gateway, path):
    with one_gateway.http() as http:
        resp = http.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert isinstance(resp.json()["error"], str)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
    ],
)
def test_model_management_is_absent(one_gateway, method, path):
    with one_gateway.http() as http:
        resp = http.request(method, path, json={"model": MODEL_A})
    assert resp.status_code == 404


def test_unknown_route_is_404(one_gateway):
    with one_gateway.http() as http:
        assert http.get("/v1/no-such-route").status_code == 404


def test_ollama_root_and_version(one_gateway):
    with one_gateway.http() as http:
        root = http.get("/")
        assert root.status_code == 200
        version = http.get("/api/version")
        assert version.status_code == 200
        assert isinstance(version.json()["version"], str)


def test_request_id_header(one_gateway):
    with one_gateway.http() as http:
        resp = http.get("/v1/models")
    assert resp.status_code == 200
    assert resp.headers.get("x-request-id")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_keep_alive_survives_an_early_401(one_gateway, path):
    """A request refused before its body is read (bad key) must leave the connection usable,
    or say `Connection: close`. Otherwise a client that reuses pooled connections (httpx, so
    both official clients) fails its *next*, unrelated request with "Server disconnected".

    The body is sent only after the 401 arrives, which makes the race deterministic."""
    body = json.dumps({"model": MODEL_A, "messages": [{"role": "user", "content": "hi"}]})
    host, port = one_gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer wg_wrong\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        sock.settimeout(2.0)
        try:
            status, headers, _ = _read_response(sock)
            answered_early = True
        except TimeoutError:
            answered_early = False  # The server waits for the body first: also fine.
        sock.settimeout(CLIENT_TIMEOUT_S)
        try:
            sock.sendall(body.encode())
            if not answered_early:
                status, headers, _ = _read_response(sock)
            assert status == 401
            if headers.get("connection", "").lower() == "close":
                return
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status, _, _ = _read_response(sock)
        except (ConnectionError, OSError) as err:
            pytest.fail(
                "the gateway answered 401 before reading the request body, without "
                f"`Connection: close`, then dropped the keep-alive connection: {err!r} "
                f"(401 headers: {headers})"
            )
        assert status == 200
