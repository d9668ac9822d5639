"""OpenTelemetry traces against a real OTLP/HTTP receiver (issue 18 items 4 and 5).

A small receiver here takes the protobuf `ExportTraceServiceRequest`s a running
`wardgate serve` sends (decoded with `opentelemetry-proto`, the official Python bindings), and
the test checks what an operator's collector would get: one server span per request named
`{operation} {model}` continuing the client's trace, its children (auth, PHI guard, audit
commits, the backend attempt), the GenAI attributes, the `traceparent` the backend received,
and that no prompt or answer text, identifier or key is anywhere in the bytes exported. The
batch exporter is told to wait a minute between exports, so the spans arrive only because a
graceful shutdown flushes them."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import MODEL_A, WARDGATE_BIN, clean_env, free_port

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
# A prompt with identifiers in it; `echo:` makes the mock answer with it, so the completion
# holds them too (restored by the gateway after de-identification).
PHI = ["Zebulon Quixotefield", "4417-2291-XQ", "03/14/1961"]
PROMPT = f"echo: Patient {PHI[0]}, MRN {PHI[1]}, DOB {PHI[2]}, chest pain since Tuesday"
UNKNOWN_MODEL = "Quixotefield-private-model"
WAIT_S = 10.0


class Receiver:
    """An OTLP/HTTP trace receiver on a free port: keeps every export's raw bytes."""

    def __init__(self) -> None:
        self.exports: list[bytes] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.exports.append(body)
                    receiver.paths.append(self.path)
                    receiver.content_types.append(self.headers.get("content-type", ""))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def raw(self) -> bytes:
        with self.lock:
            return b"".join(self.exports)

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received, with its resource's attributes."""
        out = []
        with self.lock:
            exports = list(self.exports)
        for body in exports:
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_a_request_is_exported_as_a_span_tree_with_genai_attributes_and_no_text(
    mock, start_gateway, receiver
):
    gw = start_gateway(
        mock,
        "ollama",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        # Only the flush at shutdown sends the spans in time.
        OTEL_BSP_SCHEDULE_DELAY="60000",
        WARDGATE_PHI_MODE="deidentify",
    )
    with gw.http() as client:
        resp = client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL_A,
                "stream": True,
                "messages": [{"role": "user", "content": PROMPT}],
            },
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
        )
        assert resp.status_code == 200, resp.text
        assert "Quixotefield" in resp.text, "the echo restores the identifiers"
        # What the backend was sent, as it received it.
        sent = httpx.get(f"{mock.url}/_mock/last-request", timeout=5).json()
        refused = client.post(
            "/v1/chat/completions",
            json={"model": UNKNOWN_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert refused.status_code == 404, refused.text
    assert receiver.spans() == [], "nothing is sent before the batch delay or the shutdown"
    assert gw.stop() == 0, gw.logs()[-4000:]

    spans = receiver.spans()
    assert spans, f"no spans exported; gateway log:\n{gw.logs()[-4000:]}"
    assert set(receiver.paths) == {"/v1/traces"}
    assert set(receiver.content_types) == {"application/x-protobuf"}
    resource = spans[0][0]
    assert resource["service.name"] == "wardgate"

    by_id = {s.span_id.hex(): s for _, s in spans}
    servers = [s for _, s in spans if s.kind == Span.SPAN_KIND_SERVER]
    summary = [(s.name, s.kind, s.span_id.hex(), s.parent_span_id.hex()) for _, s in spans]
    server = next((s for s in servers if s.name == f"chat {MODEL_A}"), None)
    assert server is not None, summary
    # The client's trace continues through the gateway.
    assert server.trace_id.hex() == CLIENT_TRACE
    assert server.parent_span_id.hex() == CLIENT_SPAN
    a = attributes(server.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == MODEL_A
    assert a["gen_ai.provider.name"] == "ollama"
    assert a["gen_ai.response.model"] == MODEL_A
    assert a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert 0 < a["gen_ai.server.time_to_first_token"] < WAIT_S
    assert a["http.route"] == "/v1/chat/completions"
    assert a["http.response.status_code"] == 200
    assert "error.type" not in a

    children = [s for _, s in spans if s.parent_span_id == server.span_id]
    assert sorted(s.name for s in children) == [
        "audit commit",
        "audit commit",
        "auth",
        f"chat {MODEL_A}",
        "phi guard",
    ], [s.name for s in children]
    for s in children:
        assert s.trace_id == server.trace_id
        assert s.start_time_unix_nano >= server.start_time_unix_nano
        assert s.end_time_unix_nano <= server.end_time_unix_nano
    phi = next(s for s in children if s.name == "phi guard")
    assert attributes(phi.attributes)["wardgate.phi.pseudonymized"] is True
    attempt = next(s for s in children if s.kind == Span.SPAN_KIND_CLIENT)
    at = attributes(attempt.attributes)
    assert at["wardgate.backend.kind"] == "ollama"
    assert at["wardgate.backend.attempt"] == 1
    assert at["gen_ai.request.model"] == MODEL_A

    # The backend got the attempt's context.
    headers = dict(sent["headers"])
    assert headers["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id.hex()}-01"
    assert by_id[attempt.span_id.hex()] is attempt

    # A model the client typed that does not exist is named as in the metrics; a refusal is
    # not a server error.
    unknown = next((s for s in servers if s.name == "chat _unknown"), None)
    assert unknown is not None, summary
    ua = attributes(unknown.attributes)
    assert ua["gen_ai.request.model"] == "_unknown"
    assert ua["error.type"] == "model_not_found"
    assert unknown.status.code != unknown.status.STATUS_CODE_ERROR

    # Nothing of the prompt, the answer, the unknown model's name or the key, in any byte.
    raw = receiver.raw()
    for text in [*PHI, "Zebulon", "Quixotefield", "chest pain", UNKNOWN_MODEL, gw.key]:
        assert text.encode() not in raw, f"{text!r} was exported"


def test_an_unreachable_grpc_collector_costs_no_request(mock, start_gateway):
    """gRPC export to a port nobody listens on: requests are answered all the same, and the
    gateway still stops cleanly."""
    gw = start_gateway(
        mock,
        "openai",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_TIMEOUT="500",
    )
    for _ in range(3):
        out = gw.openai().chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "hello"}]
        )
        assert out.choices[0].message.content
    deadline = time.monotonic() + WAIT_S
    assert gw.stop() == 0, gw.logs()[-4000:]
    assert time.monotonic() < deadline


def test_a_protocol_this_build_cannot_speak_is_refused_at_start(tmp_path, mock):
    env = clean_env(
        WARDGATE_DB=str(tmp_path / "wardgate.db"),
        WARDGATE_BACKEND=f"ollama:{mock.url}",
        WARDGATE_LISTEN=f"127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
    )
    result = subprocess.run(
        [str(WARDGATE_BIN), "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in result.stderr, result.stderr
    assert os.path.exists(WARDGATE_BIN)
