"""The OpenAI front (`/v1/*`) through the official `openai` Python client, over both backend
kinds."""

from __future__ import annotations

import base64
import json
import math
import struct

import openai
import pytest

from conftest import COUNTED_TEXT, EMBEDDING_DIM, MODEL_A, MODEL_B, MOCK_TOKENS

ECHO_TEXT = "hello from the e2e suite"
WEATHER_TOOL = {
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


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("Say something.", COUNTED_TEXT), (f"echo:{ECHO_TEXT}", ECHO_TEXT)],
    ids=["counted", "echo"],
)
def test_chat(gateway, prompt, expected):
    resp = gateway.openai().chat.completions.create(
        model=MODEL_A, messages=[{"role": "user", "content": prompt}]
    )
    assert resp.object == "chat.completion"
    assert resp.model == MODEL_A
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_system_message_and_second_model(gateway):
    resp = gateway.openai().chat.completions.create(
        model=MODEL_B,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"echo:{ECHO_TEXT}"},
        ],
    )
    assert resp.model == MODEL_B
    assert resp.choices[0].message.content == ECHO_TEXT


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("Say something.", COUNTED_TEXT), (f"echo:{ECHO_TEXT}", ECHO_TEXT)],
    ids=["counted", "echo"],
)
def test_chat_stream(gateway, prompt, expected):
    stream = gateway.openai().chat.completions.create(
        model=MODEL_A, messages=[{"role": "user", "content": prompt}], stream=True
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    assert len({c.id for c in chunks}) == 1, "every chunk carries the same id"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    # Without stream_options there is no usage in the stream.
    assert all(c.usage is None for c in chunks)


def test_chat_stream_include_usage(gateway):
    stream = gateway.openai().chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "user", "content": "Say something."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == MOCK_TOKENS
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == COUNTED_TEXT


def test_chat_max_tokens_cuts_with_length(gateway):
    resp = gateway.openai().chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=3,
    )
    assert resp.choices[0].message.content == "tok0 tok1 tok2 "
    assert resp.choices[0].finish_reason == "length"


def test_legacy_completions(gateway):
    client = gateway.openai()
    resp = client.completions.create(model=MODEL_A, prompt=f"echo:{ECHO_TEXT}")
    assert resp.object == "text_completion"
    assert resp.choices[0].text == ECHO_TEXT
    assert resp.choices[0].finish_reason == "stop"

    resp = client.completions.create(model=MODEL_A, prompt="Once upon a time")
    assert resp.choices[0].text == COUNTED_TEXT


def test_legacy_completions_stream(gateway):
    stream = gateway.openai().completions.create(
        model=MODEL_A, prompt=f"echo:{ECHO_TEXT}", stream=True
    )
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == ECHO_TEXT


def _check_vectors(vectors):
    for vector in vectors:
        assert len(vector) == EMBEDDING_DIM
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"], ids=["default", "float", "base64"])
def test_embeddings(gateway, encoding_format):
    # The client asks for base64 when the caller says nothing, and decodes it itself.
    kwargs = {"encoding_format": encoding_format} if encoding_format else {}
    resp = gateway.openai().embeddings.create(
        model=MODEL_A, input=["first text", "second text"], **kwargs
    )
    assert [d.index for d in resp.data] == [0, 1]
    vectors = [d.embedding for d in resp.data]
    if encoding_format == "base64":
        # Asked for explicitly, the client hands back the raw little-endian float32 base64.
        assert all(isinstance(v, str) for v in vectors)
        vectors = [
            list(struct.unpack(f"<{EMBEDDING_DIM}f", base64.b64decode(v))) for v in vectors
        ]
    _check_vectors(vectors)
    assert vectors[0] != vectors[1]


def test_embeddings_base64_equals_float(gateway):
    client = gateway.openai()
    default = client.embeddings.create(model=MODEL_A, input="same text").data[0].embedding
    floats = (
        client.embeddings.create(model=MODEL_A, input="same text", encoding_format="float")
        .data[0]
        .embedding
    )
    assert default == pytest.approx(floats, abs=1e-6)


def test_models_list_and_retrieve(gateway):
    client = gateway.openai()
    ids = {m.id for m in client.models.list()}
    assert {MODEL_A, MODEL_B} <= ids
    model = client.models.retrieve(MODEL_A)
    assert model.id == MODEL_A
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_tool_call(gateway):
    resp = gateway.openai().chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id, "a tool call needs an id for the tool_call_id reply"
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_call_stream(gateway):
    stream = gateway.openai().chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, args, ids, finish = "", "", set(), None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
            if call.function and call.function.name:
                name += call.function.name
            if call.function and call.function.arguments:
                args += call.function.arguments
        finish = choice.finish_reason or finish
    assert len(ids) == 1
    assert name == "get_weather"
    assert json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_tool_result_round_trip(gateway):
    """The assistant's tool call and the tool's answer go back in; the model then replies."""
    client = gateway.openai()
    first = client.chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    call = first.choices[0].message.tool_calls[0]
    resp = client.chat.completions.create(
        model=MODEL_A,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'},
            {"role": "user", "content": f"echo:{ECHO_TEXT}"},
        ],
    )
    assert resp.choices[0].message.content == ECHO_TEXT


# -- errors ------------------------------------------------------------------------------------


def test_bad_key_is_401(gateway):
    # A fresh client per call: connection reuse after an early 401 is checked on its own in
    # test_http_edges.py.
    bad = "wg_not_a_real_key_0000000000000000"
    with pytest.raises(openai.AuthenticationError) as err:
        gateway.openai(key=bad).chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as err:
        gateway.openai(key=bad).models.list()
    assert err.value.code == "invalid_api_key"


def test_unknown_model_is_404(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.openai().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"


def test_unknown_model_embeddings_is_404(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.openai().embeddings.create(model="no-such-model", input="x")
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_context_overflow_is_400(gateway, stream):
    long_prompt = "lorem ipsum " * 2000  # about 24,000 bytes, far over 4096 tokens
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": long_prompt}], stream=stream
        )
    assert err.value.status_code == 400
    assert err.value.code == "context_length_exceeded"


def test_context_overflow_legacy_completions_is_400(gateway):
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().completions.create(model=MODEL_A, prompt="x" * 20_000)
    assert err.value.code == "context_length_exceeded"
