"""Protected health information never reaches the logs, even at debug level: every front and
every path (success, streaming, errors) is driven with a recognisable patient record, then the
gateway is stopped and its whole stderr is searched."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from conftest import BACKEND_KINDS, MODEL_A

PHI = "Patient John Q Smith SSN 123-45-6789"
# Fragments that must not appear on their own either (a log may quote part of a body).
PHI_FRAGMENTS = [PHI, "123-45-6789", "John Q Smith"]
ECHO_PHI = f"echo:{PHI}"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_patient",
        "parameters": {"type": "object", "properties": {"ssn": {"type": "string"}}},
    },
}


def drive_every_path(gw) -> None:
    oa = gw.openai()
    ol = gw.ollama()
    user = [{"role": "user", "content": ECHO_PHI}]

    assert oa.chat.completions.create(model=MODEL_A, messages=user).choices[0].message.content == PHI
    streamed = oa.chat.completions.create(
        model=MODEL_A, messages=user, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == PHI
    assert oa.completions.create(model=MODEL_A, prompt=ECHO_PHI).choices[0].text == PHI
    oa.embeddings.create(model=MODEL_A, input=PHI)
    oa.chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "system", "content": PHI}, *user],
        tools=[TOOL],
    )

    assert ol.chat(model=MODEL_A, messages=user).message.content == PHI
    assert "".join(p.message.content for p in ol.chat(model=MODEL_A, messages=user, stream=True)) == PHI
    assert ol.generate(model=MODEL_A, prompt=ECHO_PHI).response == PHI
    ol.generate(model=MODEL_A, prompt=PHI, system=PHI, stream=False)
    ol.embed(model=MODEL_A, input=[PHI])
    ol.embeddings(model=MODEL_A, prompt=PHI)

    # Error paths: the prompt is in the body the gateway refuses.
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": PHI + " x" * 12_000}]
        )
    with pytest.raises(ollama.ResponseError):
        ol.generate(model=MODEL_A, prompt=PHI + " x" * 12_000)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="no-such-model", messages=user)
    with pytest.raises(openai.AuthenticationError):
        gw.openai(key="wg_bogus_key_value_for_logging").chat.completions.create(
            model=MODEL_A, messages=user
        )
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}) as http:
        # A JSON decoder's error text quotes the offending value; that must not be logged.
        for path, body in [
            ("/v1/chat/completions", {"model": MODEL_A, "messages": PHI}),
            ("/v1/chat/completions", {"model": MODEL_A, "messages": [{"role": PHI, "content": PHI}]}),
            ("/api/chat", {"model": MODEL_A, "messages": PHI}),
            ("/api/generate", {"model": MODEL_A, "prompt": ["not", "a", "string", PHI]}),
            ("/v1/embeddings", {"model": MODEL_A, "input": {"text": PHI}}),
        ]:
            assert http.post(path, json=body).status_code == 400, (path, body)
        assert http.post("/v1/chat/completions", content=f'{{"model": "{PHI}'.encode(),
                         headers={"content-type": "application/json"}).status_code == 400


@pytest.mark.parametrize("backend_kind", BACKEND_KINDS)
def test_logs_carry_no_prompt_text(mock, start_gateway, backend_kind):
    gw = start_gateway(mock, backend_kind)
    drive_every_path(gw)
    assert gw.stop() == 0
    logs = gw.logs()

    for fragment in PHI_FRAGMENTS:
        assert fragment not in logs, f"{fragment!r} was logged:\n" + "\n".join(
            line for line in logs.splitlines() if fragment in line
        )
    # Neither the real key nor a presented wrong one is logged.
    assert gw.key not in logs
    assert "wg_bogus_key_value_for_logging" not in logs

    # Nor is any of it stored: the database (and its WAL) holds keys and audit records only.
    for path in sorted(gw.db.parent.glob(gw.db.name + "*")):
        stored = path.read_bytes()
        for fragment in PHI_FRAGMENTS:
            assert fragment.encode() not in stored, f"{fragment!r} is stored in {path.name}"

    # The check means something only if the logger was on, at debug level, and saw the traffic.
    records = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert any(r.get("level") == "DEBUG" for r in records)
    routes = {r.get("route") for r in records}
    assert {"/v1/chat/completions", "/api/chat", "/api/generate", "/v1/embeddings"} <= routes
