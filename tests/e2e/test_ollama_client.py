"""The Ollama front (`/api/*`) through the official `ollama` Python client, over both backend
kinds."""

from __future__ import annotations

import math

import ollama
import pytest

from conftest import COUNTED_TEXT, EMBEDDING_DIM, MODEL_A, MODEL_B

ECHO_TEXT = "hello from the ollama client"


def base_name(name: str) -> str:
    """Ollama treats `m` and `m:latest` as one model."""
    return name.removesuffix(":latest")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("Say something.", COUNTED_TEXT), (f"echo:{ECHO_TEXT}", ECHO_TEXT)],
    ids=["counted", "echo"],
)
def test_chat(gateway, prompt, expected):
    resp = gateway.ollama().chat(model=MODEL_A, messages=[{"role": "user", "content": prompt}])
    assert resp.done is True
    assert resp.message.role == "assistant"
    assert resp.message.content == expected
    assert resp.done_reason == "stop"
    assert base_name(resp.model) == MODEL_A


def test_chat_stream(gateway):
    parts = list(
        gateway.ollama().chat(
            model=MODEL_A,
            messages=[{"role": "user", "content": f"echo:{ECHO_TEXT}"}],
            stream=True,
        )
    )
    assert len(parts) > 1
    assert "".join(p.message.content or "" for p in parts) == ECHO_TEXT
    assert parts[-1].done is True
    assert all(p.done is False for p in parts[:-1])


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("Once upon a time", COUNTED_TEXT), (f"echo:{ECHO_TEXT}", ECHO_TEXT)],
    ids=["counted", "echo"],
)
def test_generate(gateway, prompt, expected):
    resp = gateway.ollama().generate(model=MODEL_B, prompt=prompt)
    assert resp.done is True
    assert resp.response == expected


def test_generate_stream(gateway):
    parts = list(gateway.ollama().generate(model=MODEL_A, prompt="Go on.", stream=True))
    assert "".join(p.response for p in parts) == COUNTED_TEXT
    assert parts[-1].done is True


def test_num_predict_limits_tokens(gateway):
    resp = gateway.ollama().generate(model=MODEL_A, prompt="Go on.", options={"num_predict": 2})
    assert resp.response == "tok0 tok1 "
    assert resp.done_reason == "length"


def test_embed(gateway):
    resp = gateway.ollama().embed(model=MODEL_A, input=["first text", "second text"])
    assert len(resp.embeddings) == 2
    for vector in resp.embeddings:
        assert len(vector) == EMBEDDING_DIM
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-4)
    assert resp.embeddings[0] != resp.embeddings[1]


def test_embed_matches_openai_front(gateway):
    """One text, one vector, whichever front asks."""
    native = gateway.ollama().embed(model=MODEL_A, input="same text").embeddings[0]
    via_openai = (
        gateway.openai()
        .embeddings.create(model=MODEL_A, input="same text", encoding_format="float")
        .data[0]
        .embedding
    )
    assert native == pytest.approx(via_openai, abs=1e-6)


def test_legacy_embeddings(gateway):
    resp = gateway.ollama().embeddings(model=MODEL_A, prompt="legacy route")
    assert len(resp.embedding) == EMBEDDING_DIM


def test_list(gateway):
    names = {base_name(m.model) for m in gateway.ollama().list().models}
    assert {MODEL_A, MODEL_B} <= names


def test_show_and_ps(gateway):
    client = gateway.ollama()
    shown = client.show(MODEL_A)
    assert shown.details is not None or shown.modelinfo is not None
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model")
    assert err.value.status_code == 404
    client.ps()  # parses


def test_tool_call(gateway):
    resp = gateway.ollama().chat(
        model=MODEL_A,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
    )
    calls = resp.message.tool_calls
    assert calls and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    # The native API carries arguments as an object, not a JSON string.
    assert calls[0].function.arguments == {"city": "Paris"}


# -- errors ------------------------------------------------------------------------------------


def test_bad_key_is_401(gateway):
    # A fresh client per call: connection reuse after an early 401 is checked on its own in
    # test_http_edges.py.
    bad = "wg_not_a_real_key_0000000000000000"
    with pytest.raises(ollama.ResponseError) as err:
        gateway.ollama(key=bad).chat(model=MODEL_A, messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 401
    with pytest.raises(ollama.ResponseError) as err:
        gateway.ollama(key=bad).list()
    assert err.value.status_code == 401


def test_unknown_model_is_404(gateway):
    with pytest.raises(ollama.ResponseError) as err:
        gateway.ollama().chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404
    assert "no-such-model" in err.value.error


def test_context_overflow_is_400(gateway):
    with pytest.raises(ollama.ResponseError) as err:
        gateway.ollama().generate(model=MODEL_A, prompt="x" * 20_000)
    assert err.value.status_code == 400
